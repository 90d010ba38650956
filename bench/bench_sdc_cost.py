#!/usr/bin/env python3
"""Cost of the SDC detector's per-step work under ZeRO-1: `keel launch` of the
tiny config on 2 ranks with dist.zero1=true and resilience.sdc on, then off,
the runs interleaved so that a change in the machine's load hits both alike.

Under ZeRO-1 every step hashes all parameters (the per-step digest) and this
rank's AdamW moments twice (verified before the step, sealed after the
update); all of it is inside the trainer's step time (metrics.jsonl
`step_seconds`). The check every `sdc_every` steps runs after the step and
exists without ZeRO-1 too, so it is not counted here.

Prints each run's median step time (steps after the fifth), then one JSON line:
  {"bench": "sdc_cost", "on_ms", "off_ms", "delta_ms", "share"}
with the median of the runs' medians.
Usage: bench/bench_sdc_cost.py --keel build/keel [--reps 4] [--steps 40]
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
    ap.add_argument("--work", default="build/bench/sdc_cost")
    ap.add_argument("--config", default="configs/tiny.toml")
    ap.add_argument("--reps", type=int, default=4)
    ap.add_argument("--steps", type=int, default=40)
    a = ap.parse_args()
    res = {"on": [], "off": []}
    for i in range(a.reps):
        for sdc in ("on", "off"):
            run = os.path.join(a.work, f"sdc-{sdc}-{i}")
            shutil.rmtree(run, ignore_errors=True)
            cmd = [a.keel, "launch", "-n", "2", "--", "train", "--config", a.config,
                   "dist.zero1=true", f"resilience.sdc={'true' if sdc == 'on' else 'false'}",
                   f"train.steps={a.steps}", "train.eval_every=0", "checkpoint.every=100000",
                   "train.threads=1", f"run.dir={run}"]
            p = subprocess.run(cmd, env=dict(os.environ, OMP_NUM_THREADS="1"),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            if p.returncode:
                print(p.stdout[-3000:])
                sys.exit(f"{' '.join(cmd)}: exit {p.returncode}")
            with open(os.path.join(run, "metrics.jsonl")) as f:
                rows = [json.loads(line) for line in f if line.strip()]
            # The first steps warm up caches and the allocator.
            st = [r["step_seconds"] for r in rows if "step_seconds" in r and r["step"] > 5]
            res[sdc].append(statistics.median(st) * 1000)
            print(f"run {i} sdc={sdc}: median {res[sdc][-1]:.1f} ms/step over {len(st)} steps",
                  flush=True)
    on, off = statistics.median(res["on"]), statistics.median(res["off"])
    print(json.dumps({"bench": "sdc_cost", "on_ms": round(on, 2), "off_ms": round(off, 2),
                      "delta_ms": round(on - off, 2), "share": round((on - off) / on, 4)}))


if __name__ == "__main__":
    main()
