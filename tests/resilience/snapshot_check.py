#!/usr/bin/env python3
"""In-memory snapshots under real `keel launch` and mpirun ranks, on the tiny
config for 40 steps with a snapshot after every step and no disk checkpoint
before the last step (checkpoint.every 50) unless stated.

kills: 2 ranks; rank kills at seeded random steps and ranks, without and with
       ZeRO-1. Every world after a kill must resume from the in-memory
       snapshot ("source": "snapshot" in its resume event), each restart may
       lose at most one step, and the final parameters must equal a
       fault-free run's bit for bit.
loss:  3 ranks with ZeRO-1 and a disk checkpoint every 10 steps:
       - rank 1's machine is lost (node_loss: its snapshots are removed)
         while rank 2 lags a step behind (a straggler before its snapshot):
         rank 1's optimizer shard comes back from the buddy copy on rank 2;
       - rank 2 dies halfway through writing its snapshot: the torn slot is
         ignored and the previous snapshot is used;
       - ranks 1 and 2's machines are lost together (a rank and its buddy):
         no copy of rank 1's shard is left, so the world resumes from the
         disk checkpoint and the resume event says why (and, in a second
         run, before the first checkpoint, starts from scratch and its start
         event says why);
       and the final parameters equal a fault-free 3-rank run's bit for bit.
"""
import argparse
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from keel_runs import events, launch, params_digest, short, tiny_overrides  # noqa: E402

STEPS = 40


def must_finish(rc, secs, out, name):
    print(f"{name}: exit {rc} in {secs:.1f}s")
    if rc != 0:
        print(out[-3000:])
        sys.exit(f"FAIL: {name} did not finish unattended")


def resumes(ev):
    """The resume event of each world after the first, with the restart before it."""
    out = []
    for i, e in enumerate(ev):
        if e["event"] != "restart":
            continue
        nxt = [x for x in ev[i + 1:] if x["event"] in ("resume", "start") and
               x.get("source") != "supervisor"]
        out.append((e, nxt[0] if nxt else None))
    return out


def check_kills(keel, corpus, work, seed):
    rng = random.Random(seed)
    plan = ";".join(f"kind=kill,step={s},rank={rng.randrange(2)}"
                    for s in sorted(rng.sample(range(4, STEPS - 1), 2)))
    print(f"kills: seed {seed}, plan {plan}")
    base = tiny_overrides(corpus, work, STEPS, 50, ["checkpoint.async=false"])
    ref = launch(keel, work, "ref2", base)
    must_finish(*ref[1:], "ref2")
    failures = []
    for name, extra in (("kills", []), ("kills_zero1", ["dist.zero1=true"])):
        run, rc, secs, out = launch(keel, work, name, base + extra, faults=plan)
        must_finish(rc, secs, out, name)
        ev = events(run)
        pairs = resumes(ev)
        if len(pairs) != 2:
            failures.append(f"{name}: {len(pairs)} restarts, expected 2")
        for restart, res in pairs:
            print(f"  {name}: {short(restart)} -> {res and short(res)} {res and res.get('copies')}")
            if res is None or res["event"] != "resume" or res.get("source") != "snapshot":
                failures.append(f"{name}: a world did not resume from the snapshot: {res}")
            if restart.get("steps_lost", 0) > 1:
                failures.append(f"{name}: a restart lost {restart['steps_lost']} steps (> 1)")
            if res and res["step"] != restart["step"]:
                failures.append(f"{name}: the restart names step {restart['step']}, the world "
                                f"resumed from {res['step']}")
        if params_digest(run) != params_digest(ref[0]):
            failures.append(f"{name}: final parameters differ from the fault-free run")
        metrics = [l for l in open(os.path.join(run, "metrics.jsonl")) if '"snapshot_bytes"' in l]
        if not metrics:
            failures.append(f"{name}: metrics.jsonl has no snapshot_bytes")
    return failures


def check_loss(keel, corpus, work):
    base = tiny_overrides(corpus, work, STEPS, 10, ["checkpoint.async=false", "dist.zero1=true"])
    ref = launch(keel, work, "ref3", base, ranks=3)
    must_finish(*ref[1:], "ref3")
    # Rank 2 lags behind at the snapshot of step 7 when rank 1's machine goes
    # at the start of step 8: the buddy copy of step 6 must be on rank 2 by then.
    plan = ("kind=straggler,step=7,rank=2,seconds=1,where=snapshot;"
            "kind=node_loss,step=8,rank=1;"
            "kind=kill_in_snapshot,step=17,rank=2;"
            "kind=node_loss,step=28,rank=1,machines=2")
    run, rc, secs, out = launch(keel, work, "loss", base, faults=plan, ranks=3)
    must_finish(rc, secs, out, "loss")
    ev = events(run)
    pairs = resumes(ev)
    for restart, res in pairs:
        print(f"  {short(restart)} -> {res and short(res)} "
              f"{res and (res.get('copies') or res.get('snapshot_not_used'))}")
    failures = []
    if len(pairs) != 3:
        return failures + [f"{len(pairs)} restarts, expected 3"]
    (r1, a), (r2, b), (r3, c) = pairs
    # node_loss of rank 1 at the start of step 8: rank 1's shard from rank 2's buddy copy.
    if a.get("source") != "snapshot" or a["step"] < 6:
        failures.append(f"node_loss: not resumed from a snapshot of step >= 6: {a}")
    else:
        rank1 = [x for x in a.get("copies", []) if x.get("rank") == 1]
        if not rank1 or rank1[0].get("moments") != "buddy:2":
            failures.append(f"node_loss: rank 1's moments did not come from buddy:2: {a}")
    # Killed halfway through the snapshot of step 17: the previous one (16).
    if b.get("source") != "snapshot" or b["step"] != 16:
        failures.append(f"torn snapshot: expected a resume from the snapshot of step 16: {b}")
    # Ranks 1 and 2 lost together at the start of step 28: the disk checkpoint of step 20.
    if c.get("source") != "disk" or c["step"] != 20:
        failures.append(f"rank and buddy lost: expected a resume from the disk checkpoint of "
                        f"step 20: {c}")
    elif "rank 1" not in c.get("snapshot_not_used", ""):
        failures.append(f"rank and buddy lost: the resume event does not say why: {c}")
    for restart, res in pairs:
        if res and res["step"] != restart["step"]:
            failures.append(f"the restart names step {restart['step']}, the world resumed from "
                            f"{res['step']}")
    if params_digest(run) != params_digest(ref[0]):
        failures.append("final parameters differ from the fault-free 3-rank run")
    # Ranks 1 and 2 lost together before the first disk checkpoint: the world
    # starts again from scratch, and its start event says why.
    early, rc, secs, out = launch(keel, work, "loss_early", base,
                                  faults="kind=node_loss,step=5,rank=1,machines=2", ranks=3)
    must_finish(rc, secs, out, "loss_early")
    pairs = resumes(events(early))
    if len(pairs) != 1 or not pairs[0][1] or pairs[0][1]["event"] != "start":
        failures.append(f"early loss: expected one restart from scratch, got {pairs}")
    elif "rank 1" not in pairs[0][1].get("snapshot_not_used", ""):
        failures.append(f"early loss: the start event does not say why: {pairs[0][1]}")
    else:
        print(f"  early loss -> start: {pairs[0][1]['snapshot_not_used']}")
    return failures


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--keel", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("mode", choices=["kills", "loss"])
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    if a.mode == "kills":
        seed = a.seed if a.seed is not None else random.randrange(1 << 30)
        failures = check_kills(a.keel, a.corpus, a.work, seed)
    else:
        failures = check_loss(a.keel, a.corpus, a.work)
    for f in failures:
        print("FAIL:", f)
    if failures:
        sys.exit(1)
    print(f"snapshot {a.mode}: OK")


if __name__ == "__main__":
    main()
