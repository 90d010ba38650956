#!/usr/bin/env python3
"""Cost of in-memory snapshots: `keel launch` on 2 ranks with dist.zero1=true,
resilience.snapshot_every=1, then 0, the runs interleaved so that a change in
the machine's load hits both alike (extra key=value overrides pick a bigger
model, e.g. model.n_layer=4 model.n_embd=256).

A snapshot happens after the trainer's step (metrics.jsonl `step_seconds`
excludes it): `snapshot_stall_s` is the time the loop waited (finishing the
previous copy to the buddy rank, writing its own slot, starting the next
copy) and `snapshot_bytes` the shared memory a rank holds (two own slots,
two buddy slots). Steps after the fifth count.

Prints each run's medians, then one JSON line:
  {"bench": "snapshot", "snapshot_bytes", "stall_ms", "step_on_ms", "step_off_ms",
   "stall_share"}  (stall_share = stall / (step with snapshots + stall))
Usage: bench/bench_snapshot.py --keel build/keel [--reps 3] [--steps 30] [key=value ...]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--keel", required=True)
    ap.add_argument("--work", default="build/bench/snapshot")
    ap.add_argument("--config", default="configs/tiny.toml")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_args()
    res = {"on": [], "off": [], "stall": [], "bytes": 0}
    for i in range(a.reps):
        for snap in ("on", "off"):
            run = os.path.join(a.work, f"snapshot-{snap}-{i}")
            shutil.rmtree(run, ignore_errors=True)
            cmd = [a.keel, "launch", "-n", "2", "--", "train", "--config", a.config,
                   "dist.zero1=true", f"resilience.snapshot_every={1 if snap == 'on' else 0}",
                   f"train.steps={a.steps}", "train.eval_every=0", "checkpoint.every=100000",
                   "train.threads=1", f"run.dir={run}"] + a.overrides
            p = subprocess.run(cmd, env=dict(os.environ, OMP_NUM_THREADS="1"),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            if p.returncode:
                print(p.stdout[-3000:])
                sys.exit(f"{' '.join(cmd)}: exit {p.returncode}")
            with open(os.path.join(run, "metrics.jsonl")) as f:
                rows = [json.loads(line) for line in f if line.strip()]
            rows = [r for r in rows if r["step"] > 5]
            res[snap].append(statistics.median(r["step_seconds"] for r in rows) * 1000)
            line = f"run {i} snapshots {snap}: step {res[snap][-1]:.1f} ms"
            if snap == "on":
                res["stall"].append(statistics.median(r["snapshot_stall_s"] for r in rows) * 1000)
                res["bytes"] = max(r["snapshot_bytes"] for r in rows)
                line += f", stall {res['stall'][-1]:.2f} ms, {res['bytes']} bytes per rank"
            print(line, flush=True)
    on, off, stall = (statistics.median(res[k]) for k in ("on", "off", "stall"))
    print(json.dumps({"bench": "snapshot", "snapshot_bytes": res["bytes"],
                      "stall_ms": round(stall, 3), "step_on_ms": round(on, 2),
                      "step_off_ms": round(off, 2), "stall_share": round(stall / (on + stall), 4)}))


if __name__ == "__main__":
    main()
