#!/usr/bin/env python3
"""Training over slow links: plain data parallelism, each gradient codec and
DiLoCo on the tiny config with 2 ranks, to one token budget, at an unshaped
link and at shaped ones (scripts/shaped_net.sh: a network namespace whose
loopback is rate-limited by tc tbf, Open MPI forced onto TCP over it).

Prints one JSON line per run (mode, link, bytes sent per step, wall time,
final validation loss, wall-time ratio to unshaped plain DP) and a summary
line with the issue's checks. The validation loss of a mode does not depend on
the link (the same run, bit for bit), so a run whose projected time exceeds
--max-run-s is stopped after a prefix of steps: its wall time is projected
from the measured steps ("projected": true), its losses so far are checked
equal to the unshaped run's, and its final loss is that run's.

Needs root (ip netns, tc). About 30-60 minutes on 2 cores.
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time

MODES = {
    "dp": [],
    "bf16": ["dist.compression=bf16"],
    "int8": ["dist.compression=int8"],
    "topk": ["dist.compression=topk", "dist.topk_fraction=0.01"],
    "diloco8": ["dist.sync=diloco", "dist.diloco_steps=8"],
    "diloco32": ["dist.sync=diloco", "dist.diloco_steps=32"],
    "diloco32_int8": ["dist.sync=diloco", "dist.diloco_steps=32", "dist.compression=int8"],
    # Each rank's own AdamW step, its update sent as top-k (int8 values) with a
    # sparsity warm-up from dense to 1% over the first 100 steps, and less
    # explicit momentum than plain DP (the delay adds its own).
    "topk_update": ["dist.compression=topk", "dist.topk_fraction=0.01", "dist.compress_update=true",
                    "dist.topk_warmup_steps=100", "dist.topk_warmup_start=1.0",
                    "dist.topk_values=int8", "dist.update_beta1=0.7"],
    # DiLoCo after 32 steps of int8-compressed gradient averaging.
    "diloco32_int8_warm": ["dist.sync=diloco", "dist.diloco_steps=32", "dist.compression=int8",
                           "dist.diloco_warmup_steps=32"],
    # DiLoCo after 48 steps of int4-compressed gradient averaging (about the
    # bytes of 21 int8 steps), int4 pseudo-gradients.
    "diloco32_int4_warm": ["dist.sync=diloco", "dist.diloco_steps=32", "dist.compression=int4",
                           "dist.diloco_warmup_steps=48"],
}
# Modes whose first steps send more than the rest (a warm-up): a prefix does
# not predict their wall time, so they always run to the end.
UNEVEN = {"topk_update", "diloco32_int8_warm", "diloco32_int4_warm"}


def read_metrics(run):
    try:
        with open(os.path.join(run, "metrics.jsonl")) as f:
            return [json.loads(l) for l in f if l.endswith("\n")]
    except FileNotFoundError:
        return []


def run_one(a, mode, rate, base_rows):
    run = os.path.join(a.work, "%s-%s" % (mode, rate))
    shutil.rmtree(run, ignore_errors=True)
    cmd = [os.path.join(a.root, "scripts", "shaped_net.sh"), "--rate", rate, "--",
           a.keel, "launch", "-n", "2", "--", "train",
           "train.steps=%d" % a.steps, "train.threads=1", "train.eval_every=0",
           "train.log_every=1000000", "checkpoint.every=0", "resilience.restart_budget=0",
           "data.cache_dir=" + os.path.join(a.work, "cache"), "run.dir=" + run] + MODES[mode]
    t0 = time.time()
    log = open(run + ".log", "w")
    p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=a.root,
                         start_new_session=True)
    projected = None
    while p.poll() is None:
        time.sleep(1)
        rows = read_metrics(run)
        if len(rows) >= a.probe_steps and base_rows is not None and mode not in UNEVEN:
            # Steady-state time per step from the measured steps (the first
            # one pays for warm-up), projected to the whole budget.
            per = sum(r["step_seconds"] for r in rows[1:]) / (len(rows) - 1)
            est = (time.time() - t0) + per * (a.steps - len(rows))
            if est > a.max_run_s:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
                projected = (rows, est, time.time() - t0)
                break
    wall = time.time() - t0
    log.close()
    rows = read_metrics(run)
    if projected is None and p.returncode != 0:
        sys.exit("bench_links: %s at %s failed (rc %d), see %s.log" % (mode, rate, p.returncode, run))
    sent = [r.get("bytes_sent", 0) for r in rows]
    out = {"bench": "links", "mode": mode, "link": rate, "steps": a.steps,
           "tokens": a.steps * 2 * 16 * 128,
           "bytes_sent_per_step": sum(sent) / max(1, len(sent)),
           "step_seconds_mean": sum(r["step_seconds"] for r in rows[1:]) / max(1, len(rows) - 1)}
    if projected is None:
        with open(os.path.join(run, "summary.json")) as f:
            s = json.load(f)
        out.update({"wall_s": wall, "train_s": s["train_seconds"], "val_loss": s["val_loss"],
                    "projected": False})
    else:
        ref_losses = [r["loss"] for r in base_rows[: len(rows)]]
        same = ref_losses == [r["loss"] for r in rows]
        out.update({"wall_s": projected[1], "measured_steps": len(rows),
                    "measured_s": projected[2], "projected": True,
                    "losses_equal_unshaped_prefix": same,
                    "val_loss": base_rows[-1].get("val_loss") if same else None})
    return out, rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--keel", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--rates", default="none,100mbit,10mbit")
    ap.add_argument("--modes", default=",".join(MODES), help="modes run on the unshaped link")
    ap.add_argument("--shaped-modes",
                    default="dp,int8,topk,topk_update,diloco8,diloco32,diloco32_int8,"
                            "diloco32_int8_warm,diloco32_int4_warm",
                    help="modes run on the shaped links")
    ap.add_argument("--max-run-s", type=float, default=300)
    ap.add_argument("--probe-steps", type=int, default=6)
    a = ap.parse_args()
    a.root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    a.keel = os.path.abspath(a.keel)
    os.makedirs(a.work, exist_ok=True)
    if os.geteuid() != 0:
        sys.exit("bench_links: needs root for ip netns and tc (scripts/shaped_net.sh)")
    results, base = [], {}
    for rate in a.rates.split(","):
        for mode in (a.modes if rate == "none" else a.shaped_modes).split(","):
            r, rows = run_one(a, mode, rate, base.get(mode))
            if rate == "none":
                base[mode] = rows
            results.append(r)
            print(json.dumps(r), flush=True)
    ref = next(r for r in results if r["mode"] == "dp" and r["link"] == "none")
    for r in results:
        r["wall_ratio_vs_dp_unshaped"] = r["wall_s"] / ref["wall_s"]
        if r.get("val_loss") is not None:
            r["val_loss_vs_dp"] = r["val_loss"] / ref["val_loss"] - 1
        r["traffic_reduction_vs_dp"] = ref["bytes_sent_per_step"] / max(1, r["bytes_sent_per_step"])

    def pick(mode, link):
        return next((r for r in results if r["mode"] == mode and r["link"] == link), None)

    summary = {"bench": "links_summary", "steps": a.steps, "dp_unshaped_wall_s": ref["wall_s"],
               "dp_val_loss": ref["val_loss"],
               "rows": [{k: r.get(k) for k in ("mode", "link", "bytes_sent_per_step", "wall_s",
                                               "projected", "val_loss", "wall_ratio_vs_dp_unshaped",
                                               "val_loss_vs_dp", "traffic_reduction_vs_dp")}
                        for r in results]}
    slow = a.rates.split(",")[-1]
    d32 = (pick("diloco32_int4_warm", slow) or pick("diloco32_int8_warm", slow)
           or pick("diloco32_int8", slow) or pick("diloco32", slow))
    if d32:
        summary["diloco32_slowest_link"] = {
            "mode": d32["mode"], "link": slow,
            "val_loss_vs_dp": d32.get("val_loss_vs_dp"),
            "wall_ratio_vs_dp_unshaped": d32["wall_ratio_vs_dp_unshaped"],
            "ok": (d32.get("val_loss_vs_dp") is not None and d32["val_loss_vs_dp"] <= 0.02
                   and d32["wall_ratio_vs_dp_unshaped"] < 1.5)}
    dps = pick("dp", slow)
    if dps:
        summary["dp_slowest_link_wall_ratio"] = dps["wall_ratio_vs_dp_unshaped"]
    for m, need in (("int8", 4), ("topk", 20), ("topk_update", 20)):
        r = pick(m, "none")
        if r:
            summary[m] = {"traffic_reduction": r["traffic_reduction_vs_dp"],
                          "val_loss_vs_dp": r.get("val_loss_vs_dp"),
                          "ok": r["traffic_reduction_vs_dp"] >= need
                          and abs(r.get("val_loss_vs_dp") or 1) <= 0.03}
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
