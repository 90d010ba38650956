#!/usr/bin/env python3
"""`keel launch`'s heartbeat and warm spare against real mpirun ranks.

A 2-rank run is killed (SIGKILL of rank 1) and later hung (rank 0 stuck in a
kernel). It must:
  - declare the killed rank dead within 0.5 s of the kill (the fault event's
    time minus the inject event's), blaming rank 1, detected by the heartbeat;
  - declare the hang within max(floor, 3 x the median step) plus one poll and
    one beat of slack, blaming rank 0;
  - restart each time from the warm spare world (`keel launch` says how many
    restarts a spare served), with no backoff after a failure that followed
    progress;
  - end with parameters bit-identical to the same run without faults;
and with resilience.heartbeat=false the same kill is still caught (by
mpirun alone), so turning the heartbeat off is a working fallback.
"""
import argparse
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from keel_runs import events, launch, params_digest, short, tiny_overrides  # noqa: E402

HANG_FLOOR = 0.5


def caught(ev, kind, detector):
    inj = next((e for e in ev if e["event"] == "inject" and e.get("kind") == kind), None)
    if not inj:
        return None, None
    i = ev.index(inj)
    f = next((e for e in ev[i + 1:] if e["event"] == "fault" and e["detector"] == detector), None)
    return inj, f


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--keel", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--work", required=True)
    a = ap.parse_args()
    steps = 40
    base = tiny_overrides(a.corpus, a.work, steps, 5,
                          [f"resilience.heartbeat_hang_floor_s={HANG_FLOOR}"])
    failures = []
    run, rc, _, out = launch(a.keel, a.work, "no_faults", base)
    if rc != 0:
        sys.exit(f"the fault-free run failed (rc {rc}):\n{out[-3000:]}")
    want = params_digest(run)

    plan = "kind=kill,step=12,rank=1;kind=hang,step=27,rank=0,where=kernel"
    run, rc, _, out = launch(a.keel, a.work, "kill_and_hang", base, plan)
    ev = events(run)
    for e in ev:
        if e["event"] in ("inject", "fault", "restart", "resume"):
            print(short(e))
    if rc != 0:
        failures.append(f"kill_and_hang exited {rc}:\n{out[-3000:]}")
    inj, f = caught(ev, "kill", "crash")
    if not f:
        failures.append("the kill was not caught as a crash")
    else:
        dt = f["time"] - inj["time"]
        print(f"kill: detected after {dt:.3f}s by {f.get('detected_by')}, blamed rank {f['rank']}")
        if dt > 0.5:
            failures.append(f"the dead rank was declared after {dt:.3f}s (bound 0.5 s)")
        if f.get("detected_by") != "heartbeat" or f["rank"] != 1:
            failures.append(f"the crash was not the heartbeat's blaming rank 1: {short(f)}")
    inj, f = caught(ev, "hang", "hang")
    if not f:
        failures.append("the hang was not caught")
    else:
        dt = f["time"] - inj["time"]
        m = re.search(r"median step ([0-9.]+)s", f["detail"])
        median = float(m.group(1)) if m else 0.0
        # The stall is timed from the rank's last progress (at most one step
        # before the inject event); then up to one 20 ms poll of the
        # supervisor and a 100 ms beat.
        bound = max(HANG_FLOOR, 3 * median) + 0.25
        print(f"hang: detected after {dt:.3f}s (median step {median:.3f}s, bound {bound:.3f}s) "
              f"by {f.get('detected_by')}, blamed rank {f['rank']}")
        if dt > bound:
            failures.append(f"the hang was declared after {dt:.3f}s (bound {bound:.3f}s)")
        if f.get("detected_by") != "heartbeat" or f["rank"] != 0:
            failures.append(f"the hang was not the heartbeat's blaming rank 0: {short(f)}")
    m = re.search(r"after (\d+) restart\(s\) \((\d+) from a warm spare\)", out)
    print(f"launch: {m.group(0) if m else 'no summary line'}")
    if not m or int(m.group(1)) < 2 or int(m.group(2)) < 1:
        failures.append("no restart was served by the warm spare")
    for e in ev:
        if e["event"] == "restart" and e.get("backoff_s", 0) > 0:
            failures.append(f"a restart after progress waited {e['backoff_s']}s of backoff")
    got = params_digest(run)
    print(f"parameters: {'bit-identical' if got == want else 'DIFFERENT'} to the fault-free run")
    if got != want:
        failures.append("final parameters differ from the fault-free run")

    run, rc, _, out = launch(a.keel, a.work, "no_heartbeat", base + ["resilience.heartbeat=false"],
                             "kind=kill,step=12,rank=1")
    inj, f = caught(events(run), "kill", "crash")
    print(f"without the heartbeat: rc {rc}, crash {'caught by mpirun' if f else 'NOT caught'}")
    if rc != 0 or not f or f.get("detected_by") == "heartbeat":
        failures.append(f"resilience.heartbeat=false: rc {rc}, fault {f and short(f)}")
    if params_digest(run) != want:
        failures.append("resilience.heartbeat=false: parameters differ from the fault-free run")
    if failures:
        print("FAIL:\n  " + "\n  ".join(failures))
        return 1
    print("heartbeat: PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
