#!/usr/bin/env python3
"""Chaos and elastic checks of `keel launch` with real mpirun ranks.

chaos:   the small config for 200 steps under 2 ranks with one fault of each
         kind (rank kill, hang, NaN, parameter bit flip, loss spike, corrupted
         latest checkpoint). The run must finish unattended, every injected
         fault must be followed by a fault event from the detector that owns
         it, no failure may cost more steps than the checkpoint interval, and
         the final parameters must equal, bit for bit, those of a fault-free
         run that skips the same batches the loss-spike detector skipped.
elastic: rank 1 dies on every start; the supervisor must exclude it and
         finish on one rank with twice the accumulation, reaching the final
         loss of a fault-free 2-rank run within LOSS_BOUND nats.
"""
import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

CKPT_EVERY = 20
STEPS = 200
LOSS_BOUND = 1e-3  # nats; the two layouts differ only in summation order

PLAN = """
[[fault]]
kind = "kill"
step = 33
rank = 1

[[fault]]
kind = "hang"
step = 47
rank = 1

[[fault]]
kind = "nan"
step = 66
repeat = 2

[[fault]]
kind = "bitflip"
step = 83
rank = 1
target = "param"
index = 7
bit = 22

[[fault]]
kind = "loss_spike"
step = 112
rank = -1
magnitude = 5.0

[[fault]]
kind = "corrupt_checkpoint"
step = 140

[[fault]]
kind = "kill"
step = 141
rank = 0
"""
SPIKE_STEP = 112
# The detector that must report each fault, by plan position.
EXPECTED = {0: "crash", 1: "hang", 2: "nan", 3: "sdc", 4: "loss_spike", 5: "checkpoint_corrupt",
            6: "crash"}


def common_overrides(corpus, work):
    return [
        f"data.corpus={corpus}", "data.vocab_size=384", "data.val_fraction=0.1",
        f"data.cache_dir={work}/cache", "model.n_layer=1", "model.n_head=2", "model.n_embd=64",
        "model.max_seq_len=32", "train.seq_len=32", "train.batch_size=8", f"train.steps={STEPS}",
        "train.warmup_steps=5", "train.lr=3e-3", "train.eval_every=0", "train.eval_batches=2",
        "train.peak_gflops=100", "train.threads=1", "train.log_every=50",
        f"checkpoint.every={CKPT_EVERY}", "checkpoint.async=false", "checkpoint.keep_last=4",
        "resilience.hang_floor_s=3", "resilience.hang_startup_s=30", "resilience.sdc_every=5",
        "resilience.backoff_s=0.2", "resilience.backoff_max_s=1",
        # The injected spike is +5 nats; the early-training bumps of this
        # small config (about +0.6 nats) must not count as spikes here.
        "resilience.spike_min_delta=1.5",
    ]


def launch(keel, work, name, extra, faults=None, ranks=2):
    run = os.path.join(work, name)
    shutil.rmtree(run, ignore_errors=True)
    cmd = [keel, "launch", "-n", str(ranks)]
    if faults:
        cmd += ["--faults", faults]
    cmd += ["--", "train"] + extra + [f"run.dir={run}"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    t0 = time.time()
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = os.path.join(work, name + ".log")
    with open(log, "w") as f:
        f.write(p.stdout)
    print(f"{name}: exit {p.returncode} in {time.time() - t0:.1f}s (output in {log})")
    if p.returncode != 0:
        print(p.stdout[-4000:])
        sys.exit(f"FAIL: {name} did not finish")
    return run


def events(run):
    with open(os.path.join(run, "events.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def params_digest(run):
    with open(os.path.join(run, "model.safetensors"), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def final_loss(run):
    with open(os.path.join(run, "metrics.jsonl")) as f:
        lines = [json.loads(line) for line in f if line.strip()]
    last = [m for m in lines if m["step"] == STEPS][-1]
    return last["loss"]


def check_chaos(keel, corpus, work):
    extra = common_overrides(corpus, work)
    plan = os.path.join(work, "plan.toml")
    with open(plan, "w") as f:
        f.write(PLAN)
    ref = launch(keel, work, "reference", extra + [f"resilience.skip_steps={SPIKE_STEP}"])
    chaos = launch(keel, work, "chaos", extra, faults=plan)
    ev = events(chaos)
    failures = []
    for line in ev:
        print("  " + json.dumps({k: line[k] for k in ("event", "detector", "rank", "step", "steps_lost")}))
    # Every injected fault is followed by a fault event from its detector.
    for fid, det in EXPECTED.items():
        inj = [i for i, e in enumerate(ev) if e["event"] == "inject" and e.get("fault_id") == fid]
        if not inj:
            failures.append(f"fault {fid} ({det}) never fired")
            continue
        after = [e for e in ev[inj[0] + 1:] if e["event"] == "fault" and e["detector"] == det]
        if not after:
            failures.append(f"fault {fid}: no '{det}' fault event after its injection")
        else:
            print(f"fault {fid}: injected at step {ev[inj[0]]['step']}, caught by {det} "
                  f"at step {after[0]['step']} after {after[0]['time'] - ev[inj[0]]['time']:.2f}s")
    # A detector's rollback must be reported by that detector, not seen as a crash.
    misread = [e for e in ev if e["event"] == "fault" and e["detector"] == "crash"
               and "rollback" in e["detail"]]
    if misread:
        failures.append(f"rollbacks recorded as crashes: {misread}")
    lost = [e["steps_lost"] for e in ev if e["steps_lost"]]
    print(f"steps lost per failure: {lost} (checkpoint interval {CKPT_EVERY})")
    if any(x > CKPT_EVERY for x in lost):
        failures.append(f"a failure lost more than {CKPT_EVERY} steps: {lost}")
    if not any(e["event"] == "finish" and "finished" in e["detail"] for e in ev):
        failures.append("no finish event from the supervisor")
    a, b = params_digest(ref), params_digest(chaos)
    print(f"final parameters sha256: reference {a[:16]}, chaos {b[:16]}")
    if a != b:
        failures.append("final parameters differ from the fault-free run")
    if failures:
        sys.exit("FAIL: " + "; ".join(failures))
    print("chaos: PASS")


def check_elastic(keel, corpus, work):
    # ZeRO-1: the 2-rank checkpoint holds the gathered moments, which the
    # 1-rank world must load and own whole.
    extra = common_overrides(corpus, work) + ["dist.zero1=true"]
    ref = launch(keel, work, "elastic_reference", extra)
    # Rank 1 dies after the first checkpoint, so the shrunk world must resume
    # from a checkpoint written by 2 ranks x accum 1.
    el = launch(keel, work, "elastic", extra,
                faults=f"kind=kill,step={CKPT_EVERY + 5},rank=1,every_start=true")
    ev = events(el)
    ex = [e for e in ev if e["event"] == "exclude"]
    if not ex or ex[0]["rank"] != 1 or ex[0]["world_size"] != 1:
        sys.exit(f"FAIL: rank 1 was not excluded: {ex}")
    after = ev[ev.index(ex[0]) + 1:]
    res = [e for e in after if e["event"] == "resume" and e["world_size"] == 1]
    if not res or res[0]["step"] != CKPT_EVERY:
        sys.exit(f"FAIL: the 1-rank world did not resume from the 2-rank checkpoint of step "
                 f"{CKPT_EVERY}: {res}")
    faults = [e for e in ev if e["event"] == "fault" and e["detector"] != "crash"]
    if faults:
        sys.exit(f"FAIL: unexpected detector faults in the elastic run: {faults}")
    print(f"elastic: rank 1 excluded, 1 rank resumed from the 2-rank checkpoint of step "
          f"{res[0]['step']}")
    la, lb = final_loss(ref), final_loss(el)
    print(f"final loss: 2 ranks x accum 1 {la:.6f}; 1 rank x accum 2 (after exclusion) {lb:.6f}; "
          f"|diff| {abs(la - lb):.2e} (bound {LOSS_BOUND})")
    if abs(la - lb) > LOSS_BOUND:
        sys.exit("FAIL: elastic run's final loss is off")
    print("elastic: PASS")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--keel", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("mode", choices=["chaos", "elastic"])
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    (check_chaos if a.mode == "chaos" else check_elastic)(a.keel, a.corpus, a.work)


if __name__ == "__main__":
    main()
