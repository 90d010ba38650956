#!/usr/bin/env python3
"""Kill -9 resume test for `keel train` checkpoints.

Trains a small config for 40 steps without interruption (the reference), then
trains the same config again and SIGKILLs the process:
  --mode random        at a random moment after step 20,
  --mode during-write  while a checkpoint after step 20 is being written
                       (the writer is slowed with KEEL_FAULT_CKPT_WRITE_SLEEP_MS
                       and the kill waits until its temporary directory holds a file),
then runs the same command again, which resumes from the newest verified
checkpoint and trains to step 40. The parameters and the AdamW state of both
runs at step 40 must be bit-identical (SHA-256 of every tensor's bytes, read
here from the safetensors files independently of keel), and so must every
step's loss in metrics.jsonl.
  --mode corrupt       drops the last metrics line of a finished run (the kill
                       window between an asynchronous save and the line's
                       append) and checks that resuming restores it; damages
                       the newest checkpoints of a finished run and
                       checks that --resume skips them with a message naming
                       the file and the reason, resumes from the older one, ends
                       bit-identical; and that with every checkpoint damaged
                       the run stops with an error instead of starting over.
"""
import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import time

STEPS = 40


def fail(msg):
    print("FAIL: " + msg, flush=True)
    sys.exit(1)


def tensor_hashes(path):
    """name -> (dtype, shape, sha256 of the bytes) for a safetensors file."""
    with open(path, "rb") as f:
        data = f.read()
    (hlen,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + hlen])
    base = 8 + hlen
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, end = e["data_offsets"]
        out[name] = (e["dtype"], tuple(e["shape"]), hashlib.sha256(data[base + b : base + end]).hexdigest())
    return out


def state_digest(run):
    """Hashes of the parameters and optimizer state of a run's step-40 checkpoint."""
    ck = os.path.join(run, "checkpoints", "step-%08d" % STEPS)
    params = tensor_hashes(os.path.join(ck, "params.safetensors"))
    opt = tensor_hashes(os.path.join(ck, "optimizer.safetensors"))
    final = tensor_hashes(os.path.join(run, "model.safetensors"))
    with open(os.path.join(ck, "manifest.json")) as f:
        man = json.load(f)
    if not params or len(opt) != 2 * len(params):
        fail("%s: %d parameters but %d optimizer tensors" % (ck, len(params), len(opt)))
    for name, h in params.items():
        if final.get(name) != h:
            fail("%s: model.safetensors tensor %s differs from the step-40 checkpoint" % (run, name))
    whole = hashlib.sha256()
    for name in sorted(params):
        whole.update(("p:" + name + ":" + params[name][2]).encode())
    for name in sorted(opt):
        whole.update(("o:" + name + ":" + opt[name][2]).encode())
    # Training state beside the parameters (e.g. mixture-of-experts routing biases).
    ms = os.path.join(ck, "model_state.safetensors")
    state = tensor_hashes(ms) if os.path.exists(ms) else {}
    for name in sorted(state):
        whole.update(("s:" + name + ":" + state[name][2]).encode())
        opt["state:" + name] = state[name]
    whole.update(("t:%d step:%d" % (man["optimizer_t"], man["step"])).encode())
    return whole.hexdigest(), params, opt


def losses(run):
    with open(os.path.join(run, "metrics.jsonl")) as f:
        rows = [json.loads(l) for l in f if l.strip()]
    steps = [r["step"] for r in rows]
    if steps != list(range(1, STEPS + 1)):
        fail("%s/metrics.jsonl: steps are %s, expected 1..%d once each" % (run, steps, STEPS))
    return [r["loss"] for r in rows]


class Runner:
    def __init__(self, args):
        self.args = args
        self.work = args.workdir
        shutil.rmtree(self.work, ignore_errors=True)
        os.makedirs(self.work)

    def cmd(self, run, extra=()):
        a = self.args
        config = ["--config", a.config] if a.config else []
        return [a.keel, "train", *config, *extra,
                "data.corpus=" + a.corpus, "data.vocab_size=384", "data.val_fraction=0.25",
                "data.cache_dir=" + os.path.join(self.work, "cache"),
                "model.n_layer=2", "model.n_head=2", "model.n_embd=64", "model.max_seq_len=64",
                "model.compute_dtype=" + a.compute, "train.seq_len=64", "train.batch_size=8",
                "train.steps=%d" % STEPS, "train.warmup_steps=5", "train.lr=3e-3",
                "train.eval_every=0", "train.eval_batches=1", "train.peak_gflops=100",
                "train.threads=1", "train.log_every=5",
                "checkpoint.every=5", "checkpoint.keep_last=3",
                "run.dir=" + os.path.join(self.work, run), *a.set]

    def run(self, run, extra=(), env=None, expect_rc=0):
        p = subprocess.run(self.cmd(run, extra), env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
        if p.returncode != expect_rc:
            fail("%s exited %d (expected %d):\n%s" % (run, p.returncode, expect_rc, p.stdout))
        return p.stdout

    def metrics_lines(self, run):
        try:
            with open(os.path.join(self.work, run, "metrics.jsonl")) as f:
                return sum(1 for l in f if l.endswith("\n"))
        except FileNotFoundError:
            return 0


def compare(runner, ref, other):
    a, pa, oa = state_digest(os.path.join(runner.work, ref))
    b, pb, ob = state_digest(os.path.join(runner.work, other))
    print("state sha256 %s: %s" % (ref, a))
    print("state sha256 %s: %s" % (other, b))
    if pa != pb:
        diff = [n for n in pa if pa[n] != pb.get(n)]
        fail("parameters differ after resume: %s" % diff[:5])
    if oa != ob:
        diff = [n for n in oa if oa[n] != ob.get(n)]
        fail("optimizer state differs after resume: %s" % diff[:5])
    if a != b:
        fail("optimizer t or step differ after resume")
    la, lb = losses(os.path.join(runner.work, ref)), losses(os.path.join(runner.work, other))
    if la != lb:
        i = next(i for i in range(STEPS) if la[i] != lb[i])
        fail("loss of step %d differs: %r vs %r" % (i + 1, la[i], lb[i]))
    print("bit-identical: %d parameter tensors, %d optimizer tensors, %d losses" % (len(pa), len(oa), STEPS))


def kill_run(runner, mode, rng, step_s):
    run = "killed"
    ckdir = os.path.join(runner.work, run, "checkpoints")
    env = dict(os.environ)
    target = None
    if mode == "during-write":
        env["KEEL_FAULT_CKPT_WRITE_SLEEP_MS"] = "3000"
    else:
        target = rng.randint(21, STEPS - 3)
    proc = subprocess.Popen(runner.cmd(run), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    killed_at, tmp_seen, latest_at_kill = None, None, None
    while time.time() < deadline:
        if proc.poll() is not None:
            fail("the run finished (rc %d) before it could be killed:\n%s" % (proc.returncode, proc.stdout.read().decode()))
        if mode == "random":
            n = runner.metrics_lines(run)
            if n >= target:
                # Somewhere inside the next step. A fixed delay outlived the
                # last three steps once a step took 7 ms: the run finished.
                time.sleep(rng.uniform(0, step_s))
                killed_at = runner.metrics_lines(run)
                proc.send_signal(signal.SIGKILL)
                break
        else:
            try:
                names = os.listdir(ckdir)
            except FileNotFoundError:
                names = []
            for n in names:
                if not n.startswith(".tmp-step-"):
                    continue
                step = int(n.split("-")[2])
                if step > 20 and os.path.exists(os.path.join(ckdir, n, "params.safetensors")):
                    with open(os.path.join(ckdir, "latest")) as f:
                        latest_at_kill = f.read().strip()
                    proc.send_signal(signal.SIGKILL)
                    tmp_seen, killed_at = n, runner.metrics_lines(run)
                    break
            if tmp_seen:
                break
        time.sleep(0.002)
    else:
        proc.kill()
        fail("timed out waiting for the moment to kill")
    rc = proc.wait()
    out = proc.stdout.read().decode()
    if rc != -signal.SIGKILL:
        fail("the run was not killed by SIGKILL (rc %d)" % rc)
    if os.path.exists(os.path.join(runner.work, run, "summary.json")):
        fail("the killed run had already finished")
    print("killed with SIGKILL after %d logged steps (target %s)" % (killed_at, target))
    if mode == "during-write":
        # The interrupted write left its temporary directory and `latest` unchanged.
        if not os.path.isdir(os.path.join(ckdir, tmp_seen)):
            fail("no temporary directory left by the interrupted write")
        with open(os.path.join(ckdir, "latest")) as f:
            latest = f.read().strip()
        if latest != latest_at_kill or latest >= "step-" + tmp_seen.split("-")[2]:
            fail("latest is %s after a kill while writing %s" % (latest, tmp_seen))
        print("killed while writing %s; latest still %s" % (tmp_seen, latest))
    return run, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--keel", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--compute", choices=["f32", "bf16"], default="f32")
    ap.add_argument("--mode", choices=["random", "during-write", "corrupt"], default="random")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--config", default=None, help="TOML config (default: keel's embedded one)")
    ap.add_argument("--set", action="append", default=[],
                    help="extra key=value override, after the built-in ones (repeatable)")
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    print("mode %s compute %s seed %d" % (args.mode, args.compute, seed), flush=True)
    rng = random.Random(seed)
    r = Runner(args)
    t0 = time.time()
    r.run("reference")
    ref_s = time.time() - t0
    print("reference run: %.1f s" % ref_s, flush=True)
    # A step's time, at most: the whole run (start-up included) over its steps.
    step_s = min(0.05, ref_s / STEPS)

    if args.mode in ("random", "during-write"):
        run, _ = kill_run(r, args.mode, rng, step_s)
        # The random mode resumes with --resume, the other automatically.
        extra = ["--resume"] if args.mode == "random" else []
        out = r.run(run, extra)
        resumed = [l for l in out.splitlines() if l.startswith("resumed from")]
        if not resumed:
            fail("the second run did not resume:\n" + out)
        print(resumed[0])
        compare(r, "reference", run)
    else:
        ref_ck = os.path.join(r.work, "reference", "checkpoints")
        kept = sorted(n for n in os.listdir(ref_ck) if n.startswith("step-"))
        if kept != ["step-00000030", "step-00000035", "step-00000040"]:
            fail("retention kept %s, expected steps 30, 35, 40" % kept)
        # A kill between an asynchronous save and the append of that step's
        # metrics line: the line is restored from the checkpoint's manifest.
        shutil.copytree(os.path.join(r.work, "reference"), os.path.join(r.work, "lostline"))
        mp = os.path.join(r.work, "lostline", "metrics.jsonl")
        with open(mp) as f:
            kept = [l for l in f if json.loads(l)["step"] != STEPS]
        with open(mp, "w") as f:
            f.writelines(kept)
        r.run("lostline", ["--resume"])
        if losses(os.path.join(r.work, "lostline")) != losses(os.path.join(r.work, "reference")):
            fail("the restored metrics line of step %d differs from the reference" % STEPS)
        print("metrics line of step %d lost after its checkpoint: restored on resume" % STEPS)
        shutil.copytree(os.path.join(r.work, "reference"), os.path.join(r.work, "damaged"))
        ck = os.path.join(r.work, "damaged", "checkpoints")
        p40 = os.path.join(ck, "step-00000040", "params.safetensors")
        with open(p40, "r+b") as f:  # flip one byte inside a tensor
            f.seek(os.path.getsize(p40) - 11)
            b = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([b[0] ^ 0x01]))
        o35 = os.path.join(ck, "step-00000035", "optimizer.safetensors")
        os.truncate(o35, os.path.getsize(o35) // 2)
        out = r.run("damaged", ["--resume"])
        for want in (p40 + ": checksum mismatch", o35 + ": size is",
                     "resumed from " + os.path.join(ck, "step-00000030")):
            if want not in out:
                fail("expected %r in the output:\n%s" % (want, out))
        print("skipped step 40 (flipped byte) and 35 (truncated), resumed from step 30")
        compare(r, "reference", "damaged")
        with open(os.path.join(r.work, "damaged", "events.jsonl")) as f:
            ev = [json.loads(l) for l in f]
        if sum(1 for e in ev if e["detector"] == "checkpoint_corrupt") != 2:
            fail("events.jsonl does not record the two corrupt checkpoints")
        # Every checkpoint damaged: the run must stop, not start over.
        for n in os.listdir(ck):
            if n.startswith("step-"):
                os.remove(os.path.join(ck, n, "manifest.json"))
        before = open(os.path.join(r.work, "damaged", "metrics.jsonl")).read()
        out = r.run("damaged", [], expect_rc=1)
        if "none of the 3 checkpoints verifies" not in out or "manifest.json: manifest is missing" not in out:
            fail("expected the run to stop naming the damaged checkpoints:\n" + out)
        if open(os.path.join(r.work, "damaged", "metrics.jsonl")).read() != before:
            fail("the refused run touched metrics.jsonl")
        print("with every checkpoint damaged the run stops: " + out.strip().splitlines()[0])
    shutil.rmtree(r.work, ignore_errors=True)
    print("PASS (%.1f s)" % (time.time() - t0))


if __name__ == "__main__":
    main()
