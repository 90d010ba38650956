"""Shared by the resilience scripts: a tiny training config, `keel launch`
runs under real mpirun, and readers for what a run leaves behind."""
import hashlib
import json
import os
import shutil
import subprocess
import time


def tiny_overrides(corpus, work, steps, ckpt_every, extra=()):
    return [
        f"data.corpus={corpus}", "data.vocab_size=384", "data.val_fraction=0.1",
        f"data.cache_dir={work}/cache", "model.n_layer=1", "model.n_head=2", "model.n_embd=64",
        "model.max_seq_len=32", "train.seq_len=32", "train.batch_size=8", f"train.steps={steps}",
        "train.warmup_steps=5", "train.lr=3e-3", "train.eval_every=0", "train.eval_batches=2",
        "train.peak_gflops=100", "train.threads=1", "train.log_every=50",
        f"checkpoint.every={ckpt_every}", "checkpoint.keep_last=3",
        "resilience.hang_floor_s=3", "resilience.hang_startup_s=15", "resilience.sdc_every=5",
        "resilience.backoff_s=0.2", "resilience.backoff_max_s=1",
        # The injected spikes are +5 nats; the early-training bumps of this
        # small config (about +0.6 nats) must not count as spikes.
        "resilience.spike_min_delta=1.5",
    ] + list(extra)


def launch(keel, work, name, overrides, faults=None, ranks=2, env=None, timeout=600):
    """Runs `keel launch`; returns (run_dir, exit code, seconds, output)."""
    run = os.path.join(work, name)
    shutil.rmtree(run, ignore_errors=True)
    cmd = [keel, "launch", "-n", str(ranks)]
    if faults:
        cmd += ["--faults", faults]
    cmd += ["--", "train"] + list(overrides) + [f"run.dir={run}"]
    e = dict(os.environ, OMP_NUM_THREADS="1")
    e.update(env or {})
    t0 = time.time()
    try:
        p = subprocess.run(cmd, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=timeout)
        rc, out = p.returncode, p.stdout
    except subprocess.TimeoutExpired as ex:
        rc, out = 124, (ex.stdout or b"").decode(errors="replace") if isinstance(
            ex.stdout, bytes) else (ex.stdout or "")
    os.makedirs(work, exist_ok=True)
    with open(os.path.join(work, name + ".log"), "w") as f:
        f.write(" ".join(cmd) + "\n" + out)
    return run, rc, time.time() - t0, out


def events(run):
    path = os.path.join(run, "events.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def params_digest(run):
    path = os.path.join(run, "model.safetensors")
    if not os.path.exists(path):
        return None
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def short(e):
    return {k: e.get(k) for k in ("event", "detector", "rank", "step", "steps_lost", "detail")}
