#!/usr/bin/env python3
"""Makes a run directory with a fault from a real fault-free run: copies SRC to
DST, writes events.jsonl in the shared schema (start, checkpoint, a crash of
rank 0, restart and resume from the checkpoint, finish), and inserts the
metrics records the crash made the run compute twice. Prints the goodput a
report must show, computed independently of keel, as one JSON line.

With --keel KEEL it then checks `keel report goodput --json` against them.

usage: report_make_faulty_run.py SRC DST [--keel KEEL]
"""
import json
import os
import shutil
import subprocess
import sys


def main():
    src, dst = sys.argv[1], sys.argv[2]
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("checkpoints", "report*.html"))
    rows = [json.loads(l) for l in open(os.path.join(src, "metrics.jsonl")) if l.strip()]
    n = len(rows)
    ckpt, crash = n // 3, (2 * n) // 3  # checkpoint at step ckpt, crash during step crash
    # Steps ckpt+1..crash ran, the crash lost them, they ran again after resume.
    lost = rows[ckpt:crash]
    out = rows[:crash] + lost + rows[crash:]
    with open(os.path.join(dst, "metrics.jsonl"), "w") as f:
        for r in out:
            f.write(json.dumps(r) + "\n")
    sec = [r.get("step_seconds", 0.0) for r in rows]
    t0 = 1.75e9
    t_crash = t0 + sum(sec[:crash])
    restart_s = 3.5  # detection + restart of the process
    t_resume = t_crash + restart_s
    t_finish = t_resume + sum(sec[ckpt:])
    lost_s = sum(sec[ckpt:crash]) + restart_s

    def ev(t, kind, det="", rank=-1, step=0, steps_lost=0, time_lost_s=0.0, detail=""):
        return {"time": t, "event": kind, "detector": det, "rank": rank, "step": step, "steps_lost": steps_lost,
                "time_lost_s": time_lost_s, "world_size": 1, "detail": detail}

    events = [ev(t0, "start"),
              ev(t0 + sum(sec[:ckpt]), "checkpoint", step=ckpt),
              ev(t_crash, "fault", "crash", 0, crash, detail="rank 0 killed by signal 9"),
              ev(t_crash + 1.0, "restart", step=ckpt, detail="restart 1 from checkpoint"),
              ev(t_resume, "resume", "", -1, ckpt, crash - ckpt, lost_s),
              ev(t_finish, "finish", step=n)]
    with open(os.path.join(dst, "events.jsonl"), "w") as f:
        for e in events:
            f.write(json.dumps(e) + "\n")
    # The wall time is the longest of: the events' span, all step records, and
    # the last process's own training time from summary.json.
    wall = max(t_finish - t0, sum(sec) + sum(sec[ckpt:crash]))
    try:
        wall = max(wall, json.load(open(os.path.join(dst, "summary.json")))["train_seconds"])
    except (OSError, KeyError, ValueError):
        pass
    productive = sum(sec)  # every step's last record stands; none skipped
    want = {"wall_s": wall, "productive_s": productive, "recomputed_s": sum(sec[ckpt:crash]),
            "lost_crash_s": lost_s, "steps_recomputed": crash - ckpt, "ratio": productive / wall}
    print("expected goodput: " + json.dumps(want))
    if "--keel" not in sys.argv:
        return
    keel = sys.argv[sys.argv.index("--keel") + 1]
    p = subprocess.run([keel, "report", "goodput", "--run", dst, "--json"], capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit("FAIL: keel report goodput exited %d: %s" % (p.returncode, p.stderr))
    got = json.loads(p.stdout)
    print("keel report goodput: " + p.stdout.strip())
    checks = [("wall_s", got["wall_s"], want["wall_s"]), ("productive_s", got["productive_s"], want["productive_s"]),
              ("recomputed_s", got["recomputed_s"], want["recomputed_s"]),
              ("lost crash", got["lost_by_kind"].get("crash", -1), want["lost_crash_s"]),
              ("steps_recomputed", got["steps_recomputed"], want["steps_recomputed"]),
              ("ratio", got["ratio"], want["ratio"]), ("crash faults", got["faults_by_kind"].get("crash", 0), 1)]
    for name, g, w in checks:
        if abs(g - w) > 1e-6 * max(1.0, abs(w)):
            sys.exit(f"FAIL: {name}: keel says {g}, expected {w}")
    text = subprocess.run([keel, "report", "goodput", "--run", dst], capture_output=True, text=True).stdout
    print(text)
    for needle in ("wall time", "crash", "steps recomputed", "effective-training-time ratio %.4f" % want["ratio"]):
        if needle not in text:
            sys.exit(f"FAIL: text goodput lacks {needle!r}")
    print("goodput ok")


if __name__ == "__main__":
    main()
