#!/usr/bin/env python3
"""Randomized chaos: fault plans and layouts drawn from a seed, run by
`keel launch` under real mpirun, judged against a fault-free run.

Each run draws a seed (printed; `--seed S` re-runs it), then a layout (2-4
ranks, ZeRO-1 on/off, asynchronous checkpoints on/off, gradient compression
on/off) and a plan of 2-4 faults over every kind: kill, hang (in a collective
or a kernel), two NaN steps, a parameter bit flip, a bit flip in the optimizer
moments, a corrupted checkpoint (followed by a kill so that a restart must
read it) and a loss spike. It asserts:

- the run finished unattended;
- every fault that fired was reported by the detector that owns it, and a hang
  (and, with 3+ ranks, a bit flip) was blamed on the rank it hit;
- no failure lost more than checkpoint.every steps (twice that when the
  newest checkpoint was the corrupted one, or when rank 0, the writer, was
  SIGKILLed with an asynchronous write in flight);
- every rollback and restart names the checkpoint the next world resumed from;
- the final parameters equal, bit for bit, a fault-free run of the same layout
  that skips the batches the loss-spike detector skipped.

--runs N runs N seeds; --minutes M keeps drawing until M minutes passed. A
table of all runs ends the output; the exit status is 1 if any run missed.
"""
import argparse
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from keel_runs import events, launch, params_digest, tiny_overrides  # noqa: E402

STEPS = 60
EVERY = 15
KINDS = ["kill", "hang", "nan", "bitflip", "moment", "corrupt_checkpoint", "loss_spike"]
DETECTOR = {"kill": "crash", "hang": "hang", "nan": "nan", "bitflip": "sdc", "moment": "sdc",
            "corrupt_checkpoint": "checkpoint_corrupt", "loss_spike": "loss_spike"}
SPIKE_MIN_STEP = 26  # resilience.spike_min_history (20) losses, and some margin


def draw(seed):
    rng = random.Random(seed)
    lay = {"ranks": rng.choice([2, 3, 4]), "zero1": rng.random() < 0.5,
           "async": rng.random() < 0.5, "compression": rng.choice(["none", "bf16", "int8"])}
    kinds = rng.sample(KINDS, rng.randint(2, 4))
    used = []  # (first, last) step each fault acts in until its detector fires

    def free(lo, hi, ok=lambda s: True, span=0):
        # Faults keep apart, so that each is caught by its own detector (a
        # rollback for one would also repair another still waiting for its check).
        def fits(s):
            return all(s + span + 2 <= a or s >= b + 2 for a, b in used)
        cand = [s for s in range(lo, hi + 1) if ok(s) and fits(s)]
        if not cand:
            return None
        s = rng.choice(cand)
        used.append((s, s + span))
        return s

    faults = []  # (kind, dict of plan keys)
    r = lambda: rng.randrange(lay["ranks"])  # noqa: E731
    # The pair first: it needs the most room.
    if "corrupt_checkpoint" in kinds:
        # Not the first checkpoint: with no intact one left, resuming stops
        # the run by design ("none of the checkpoints verifies").
        s = free(2 * EVERY, STEPS - EVERY, lambda s: s % EVERY == 0)
        if s is not None:
            k = s + rng.randint(2, EVERY - 2)
            used.append((s, k))
            faults.append(("corrupt_checkpoint", {"step": s}))
            # Not rank 0: a kill of rank 0 would take the checkpoint write in
            # flight with it, and the corrupted checkpoint would never be read.
            faults.append(("kill", {"step": k, "rank": rng.randrange(1, lay["ranks"])}))
    for kind in kinds:
        if kind == "corrupt_checkpoint":
            continue
        if kind == "kill":
            s = free(3, STEPS - 1)
            if s is not None:
                faults.append(("kill", {"step": s, "rank": r()}))
        elif kind == "hang":
            s = free(8, STEPS - 1)
            if s is not None:
                faults.append(("hang", {"step": s, "rank": r(),
                                        "where": rng.choice(["collective", "kernel"])}))
        elif kind == "nan":
            # The first NaN only skips its update; the second rolls back. A
            # checkpoint between them would keep the skip (not fault-free).
            s = free(3, STEPS - 2, lambda s: s % EVERY != 0, span=1)
            if s is not None:
                faults.append(("nan", {"step": s, "rank": r(), "repeat": 2}))
        elif kind in ("bitflip", "moment"):
            # Caught at the next check: every sdc_every (5) steps.
            s = free(2, STEPS, span=4)
            if s is not None:
                f = {"step": s, "rank": r(), "index": rng.randrange(4096),
                     "bit": rng.randrange(0, 23)}  # mantissa: no NaN, no spike
                if kind == "moment":
                    f["target"] = "moment"
                faults.append((kind, f))
        elif kind == "loss_spike":
            s = free(SPIKE_MIN_STEP, STEPS - 1)
            if s is not None:
                faults.append(("loss_spike", {"step": s, "rank": -1, "magnitude": 5.0}))
    faults.sort(key=lambda f: f[1]["step"])
    return lay, faults


def plan_text(faults):
    out = []
    for kind, f in faults:
        k = "bitflip" if kind == "moment" else kind
        out.append(",".join([f"kind={k}"] + [f"{a}={b}" for a, b in f.items()]))
    return ";".join(out)


def overrides(corpus, work, lay, skips=()):
    extra = [f"dist.zero1={'true' if lay['zero1'] else 'false'}",
             f"checkpoint.async={'true' if lay['async'] else 'false'}",
             f"dist.compression={lay['compression']}",
             # The layout must not change under the run: exclusion is
             # rehearsed by resilience_elastic.
             "resilience.exclude_after=1000", "resilience.restart_budget=20"]
    if skips:
        extra.append("resilience.skip_steps=" + ",".join(str(s) for s in sorted(skips)))
    return tiny_overrides(corpus, work, STEPS, EVERY, extra)


def judge(ev, faults, lay):
    """Returns the misses, the most steps one failure lost, and per fault
    (in plan order) one of: caught, missed, not_fired, no_effect."""
    misses = []
    outcome = []
    max_lost = 0
    for fid, (kind, f) in enumerate(faults):
        inj = [i for i, e in enumerate(ev) if e["event"] == "inject" and e.get("fault_id") == fid]
        if not inj:
            misses.append(f"{kind}@{f['step']} never fired")
            outcome.append("not_fired")
            continue
        if "nothing flipped" in ev[inj[0]].get("detail", ""):
            outcome.append("no_effect")  # ZeRO-1 gave that rank no optimizer state
            continue
        det = DETECTOR[kind]
        after = [e for e in ev[inj[0] + 1:] if e["event"] == "fault" and e["detector"] == det]
        if not after:
            misses.append(f"{kind}@{f['step']} r{f.get('rank')}: no {det} event")
            outcome.append("missed")
            continue
        blame_known = kind == "hang" or (det == "sdc" and lay["ranks"] >= 3)
        if blame_known and after[0]["rank"] != f["rank"]:
            misses.append(f"{kind}@{f['step']} on rank {f['rank']} blamed on rank "
                          f"{after[0]['rank']}")
            outcome.append("missed")
            continue
        outcome.append("caught")
    # Steps lost per failure, against the checkpoint the restart really used.
    for i, e in enumerate(ev):
        if not e.get("steps_lost"):
            continue
        max_lost = max(max_lost, e["steps_lost"])
        nxt = [x for x in ev[i + 1:] if x["event"] in ("resume", "start")]
        corrupt_between = any(x["event"] == "fault" and x["detector"] == "checkpoint_corrupt"
                              for x in ev[i + 1:ev.index(nxt[0])] if nxt) if nxt else False
        # A kill of rank 0 itself (SIGKILL: nothing can drain) loses the
        # asynchronous write in flight; one write at most is in flight, so the
        # newest checkpoint is then at most two intervals old.
        writer_killed = (lay["async"] and e["event"] == "restart" and e["detector"] == "crash"
                         and e["rank"] == 0)
        bound = EVERY * (2 if corrupt_between or writer_killed else 1)
        if e["steps_lost"] > bound:
            misses.append(f"{e['event']} at step {e['step']} lost {e['steps_lost']} > {bound}")
    for i, e in enumerate(ev):
        if e["event"] not in ("rollback", "restart"):
            continue
        nxt = [x for x in ev[i + 1:] if x["event"] in ("resume", "start")
               and x.get("extra", {}).get("source") != "supervisor"
               and "keel launch" not in x.get("detail", "")]
        if not nxt:
            continue
        got = nxt[0]["step"] if nxt[0]["event"] == "resume" else 0
        if e["event"] == "rollback" and got != e["step"]:
            misses.append(f"rollback names step {e['step']}, the restart used {got}")
        if e["event"] == "restart" and got != e["step"]:
            misses.append(f"restart names step {e['step']}, the world resumed from {got}")
    if not any(e["event"] == "finish" and "finished" in e.get("detail", "") for e in ev):
        misses.append("did not finish")
    return misses, max_lost, outcome


def run_one(seed, keel, corpus, work, refs):
    lay, faults = draw(seed)
    plan = plan_text(faults)
    tag = f"seed{seed}"
    print(f"[{tag}] layout {lay}; plan {plan}", flush=True)
    t0 = time.time()
    run, rc, secs, out = launch(keel, work, tag, overrides(corpus, work, lay), faults=plan,
                                ranks=lay["ranks"])
    ev = events(run)
    misses = [] if rc == 0 else [f"keel launch exited {rc}"]
    m, max_lost, outcome = judge(ev, faults, lay)
    misses += m
    spikes = sorted({e["step"] for e in ev if e["event"] == "skip_batches"})
    key = (lay["ranks"], lay["zero1"], lay["compression"], tuple(spikes))
    if key not in refs:
        ref_lay = dict(lay, **{"async": False})
        ref, rrc, _, _ = launch(keel, work, f"ref-{len(refs)}", overrides(corpus, work, ref_lay,
                                                                        spikes),
                                ranks=lay["ranks"])
        refs[key] = params_digest(ref) if rrc == 0 else None
    a, b = refs[key], params_digest(run)
    identical = a is not None and a == b
    if a is None:
        misses.append("the fault-free reference failed")
    elif a != b:
        misses.append("final parameters differ from the fault-free run")
    secs = time.time() - t0
    verdict = "ok" if not misses else "MISS: " + "; ".join(misses)
    print(f"[{tag}] {verdict} ({secs:.0f}s, max steps lost {max_lost})", flush=True)
    if misses:
        print(f"[{tag}] re-run: {sys.argv[0]} --keel {keel} --corpus {corpus} --work {work} "
              f"--seed {seed}; events in {run}/events.jsonl, output in {work}/{tag}.log")
    return {"seed": seed, "lay": lay, "faults": faults, "misses": misses, "secs": secs,
            "lost": max_lost, "restarts": sum(e["event"] == "restart" for e in ev),
            "outcome": outcome, "identical": identical}


def table(rows):
    print()
    print(f"{'seed':>10} {'ranks':>5} {'zero1':>5} {'async':>5} {'comp':>5} {'restarts':>8} "
          f"{'lost':>4} {'secs':>5}  faults -> result")
    for r in rows:
        L = r["lay"]
        fl = " ".join(f"{k}@{f['step']}" + (f"/r{f['rank']}" if f.get("rank", -1) >= 0 else "")
                      for k, f in r["faults"])
        print(f"{r['seed']:>10} {L['ranks']:>5} {str(L['zero1'])[0]:>5} {str(L['async'])[0]:>5} "
              f"{L['compression']:>5} {r['restarts']:>8} {r['lost']:>4} {r['secs']:>5.0f}  {fl} -> "
              f"{'ok' if not r['misses'] else 'MISS'}")
    print(f"\n{'fault kind':<18} {'planned':>7} {'fired':>5} {'caught':>6} {'missed':>6} "
          f"{'no effect':>9}")
    tot = [0] * 5
    for kind in KINDS:
        res = [o for r in rows for (k, _), o in zip(r["faults"], r["outcome"]) if k == kind]
        c = [len(res), sum(o != "not_fired" for o in res), res.count("caught"),
             res.count("missed") + res.count("not_fired"), res.count("no_effect")]
        tot = [a + b for a, b in zip(tot, c)]
        print(f"{kind:<18} {c[0]:>7} {c[1]:>5} {c[2]:>6} {c[3]:>6} {c[4]:>9}")
    print(f"{'all':<18} {tot[0]:>7} {tot[1]:>5} {tot[2]:>6} {tot[3]:>6} {tot[4]:>9}")
    missed = sum(1 for r in rows if r["misses"])
    print(f"\n{len(rows)} runs, {tot[0]} faults planned, {tot[1]} fired, {tot[2]} caught; "
          f"{missed} run(s) with a miss; most steps lost by one failure "
          f"{max((r['lost'] for r in rows), default=0)} (checkpoint.every {EVERY}); "
          f"final parameters bit-identical to the fault-free run in "
          f"{sum(r['identical'] for r in rows)}/{len(rows)} runs")
    if missed:
        print("missed: " + "; ".join(f"seed {r['seed']}: {', '.join(r['misses'])}"
                                     for r in rows if r["misses"]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--keel", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--seed", type=int, action="append", help="re-run these seeds only")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--minutes", type=float, default=0, help="keep drawing for this long")
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    refs, rows = {}, []
    t0 = time.time()
    if a.seed:
        seeds = iter(a.seed)
    else:
        rng = random.SystemRandom()
        seeds = iter(lambda: rng.randrange(1, 10**9), None)
    for seed in seeds:
        rows.append(run_one(seed, a.keel, a.corpus, a.work, refs))
        if a.seed:
            continue
        if a.minutes > 0:
            if time.time() - t0 > a.minutes * 60:
                break
        elif len(rows) >= a.runs:
            break
    table(rows)
    sys.exit(1 if any(r["misses"] for r in rows) else 0)


if __name__ == "__main__":
    main()
