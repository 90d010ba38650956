#!/usr/bin/env python3
"""Regression checks of the failure detectors in the layouts where they used
to miss (issue 22), each with real `keel launch` and mpirun ranks.

zero1_sdc:      ZeRO-1 on 3 ranks: a parameter bit flip on the rank that owns
                the parameter (the gather spreads it to every rank) and on one
                that does not (the gather overwrites it, after it fed one
                gradient), and a flip in the optimizer moments only one rank
                holds. Each must be caught by the sdc detector, blamed on the
                rank it hit, and repaired: the final parameters equal the
                fault-free run bit for bit.
rollback_async: two NaN steps right after a checkpoint, while the background
                writer is still writing it (slowed down): the rollback must
                wait for it, lose at most checkpoint.every steps, and every
                rollback/restart event must name the checkpoint the next world
                resumed from.
hang_blame:     3 ranks, rank 2 hangs inside the gradient collective and is
                then frozen whole (SIGSTOP, its watchdog with it), later rank
                1 hangs inside a kernel: the hang fault and the restart must
                blame the rank that hung, not a rank whose watchdog fired, and
                no healthy rank is excluded.
hang_blame_snapshot: 2 ranks with ZeRO-1, in-memory snapshots and asynchronous
                checkpoints, rank 1 hangs inside a kernel (three times): rank 0 then waits
                in the snapshot copy to its buddy before the gradient exchange,
                and must have said it is past its backward by then, so that
                the hang is blamed on rank 1 (it was blamed on nobody: the
                seed 570927729 of chaos_random).
snapshot_resume_checkpoint: rank 0 is killed while the asynchronous write
                of a checkpoint is in flight, so the next world resumes from
                the in-memory snapshot while the disk lacks that checkpoint; a
                checkpoint must then be written right after the resume, so
                that a rollback soon after (two NaN steps) loses at most
                checkpoint.every steps (it went back to step 0: chaos seed
                9665696), and the final parameters equal the fault-free run.
retention:      the leftovers of an interrupted save or delete (a step-...
                directory without its manifest, .del-/.tmp- directories,
                latest.tmp.* files) are removed at start and the half-deleted
                directory is not taken for a checkpoint; and a SIGKILL while
                retention deletes never leaves a step-... directory missing files.
skipped_checkpoint: a checkpoint due at a step whose batches are skipped
                (after a loss spike) is written all the same.
"""
import argparse
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from keel_runs import events, launch, params_digest, short, tiny_overrides  # noqa: E402

CKPT_EVERY = 20


def must_finish(run, rc, secs, out, name):
    print(f"{name}: exit {rc} in {secs:.1f}s")
    if rc != 0:
        print(out[-3000:])
        sys.exit(f"FAIL: {name} did not finish unattended")


def caught_after(ev, fault_id, detector):
    inj = [i for i, e in enumerate(ev) if e["event"] == "inject" and e.get("fault_id") == fault_id]
    if not inj:
        return None, None
    after = [e for e in ev[inj[0] + 1:] if e["event"] == "fault" and e["detector"] == detector]
    return ev[inj[0]], (after[0] if after else None)


def hang_blame_failure(ev, fid, rank, what):
    """The hang of fault fid on `rank`: its fault event and the restart after
    it must both blame that rank. A failure message, or None."""
    inj, caught = caught_after(ev, fid, "hang")
    if caught is None:
        return f"{what}: no hang fault event"
    restart = [e for e in ev[ev.index(caught):] if e["event"] == "restart"]
    print(f"{what}: fault event blames rank {caught['rank']}, restart blames "
          f"{restart[0]['rank'] if restart else None}")
    if caught["rank"] != rank or not restart or restart[0]["rank"] != rank:
        return f"{what} blamed on rank {caught['rank']}"
    return None


def printed_events(run):
    """The run's events, each printed (short form)."""
    ev = events(run)
    for e in ev:
        print("  " + json.dumps(short(e)))
    return ev


def resume_consistency(ev):
    """Every rollback/restart names the step the next world resumed from."""
    bad = []
    for i, e in enumerate(ev):
        if e["event"] not in ("rollback", "restart"):
            continue
        nxt = [x for x in ev[i + 1:] if x["event"] in ("resume", "start") and
               x.get("detail", "").find("keel launch") < 0]
        if not nxt:
            continue
        got = nxt[0]["step"] if nxt[0]["event"] == "resume" else 0
        if got != e["step"]:
            bad.append(f"{e['event']} names step {e['step']} but the next world resumed from {got}")
    return bad


def check_zero1_sdc(keel, corpus, work):
    ranks = 3
    ov = tiny_overrides(corpus, work, 60, CKPT_EVERY, ["dist.zero1=true", "checkpoint.async=true"])
    ref, rc, secs, out = launch(keel, work, "zero1_reference", ov, ranks=ranks)
    must_finish(ref, rc, secs, out, "zero1_reference")
    failures = []
    # The first parameter belongs to rank 0's shard: its flip on rank 0 is
    # gathered to everyone, its flip on rank 2 is overwritten by the gather.
    plans = {
        "zero1_param": ("kind=bitflip,step=13,rank=0,index=7,bit=22;"
                        "kind=bitflip,step=33,rank=2,index=7,bit=22", [0, 2]),
        "zero1_moment": ("kind=bitflip,step=23,rank=1,target=moment,index=7,bit=22", [1]),
    }
    for name, (plan, hit) in plans.items():
        run, rc, secs, out = launch(keel, work, name, ov, faults=plan, ranks=ranks)
        must_finish(run, rc, secs, out, name)
        ev = printed_events(run)
        for fid, rank in enumerate(hit):
            inj, caught = caught_after(ev, fid, "sdc")
            if inj is None:
                failures.append(f"{name}: fault {fid} never fired")
            elif caught is None:
                failures.append(f"{name}: the flip on rank {rank} at step {inj['step']} "
                                f"was not caught by the sdc detector")
            else:
                print(f"{name}: flip on rank {rank} at step {inj['step']} caught at step "
                      f"{caught['step']}, blamed on rank {caught['rank']}")
                if caught["step"] - inj["step"] > 5:
                    failures.append(f"{name}: caught {caught['step'] - inj['step']} steps late")
                if caught["rank"] != rank:
                    failures.append(f"{name}: blamed rank {caught['rank']}, the flip hit {rank}")
        a, b = params_digest(ref), params_digest(run)
        print(f"{name}: final parameters sha256 reference {a[:16]}, faulty {str(b)[:16]}")
        if a != b:
            failures.append(f"{name}: final parameters differ from the fault-free run")
    if failures:
        sys.exit("FAIL: " + "; ".join(failures))
    print("zero1_sdc: PASS")


def slow_writer_run(keel, corpus, work, ref_name, name, faults):
    """A fault-free reference and a run with `faults` whose checkpoint writes
    (asynchronous) each sleep 300 ms after their first file, 50 steps, a
    checkpoint every CKPT_EVERY. Returns (reference dir, run dir, run events)."""
    ov = tiny_overrides(corpus, work, 50, CKPT_EVERY, ["checkpoint.async=true"])
    ref, rc, secs, out = launch(keel, work, ref_name, ov)
    must_finish(ref, rc, secs, out, ref_name)
    run, rc, secs, out = launch(keel, work, name, ov, faults=faults,
                                env={"KEEL_FAULT_CKPT_WRITE_SLEEP_MS": "300"})
    must_finish(run, rc, secs, out, name)
    return ref, run, printed_events(run)


def first_rollback(ev, failures):
    """The first rollback event (printed), or None with a failure noted."""
    rb = [e for e in ev if e["event"] == "rollback"]
    if not rb:
        failures.append("no rollback event")
        return None
    print(f"rollback to step {rb[0]['step']}, {rb[0]['steps_lost']} steps lost "
          f"(interval {CKPT_EVERY})")
    return rb[0]


def check_rollback_async(keel, corpus, work):
    # The NaNs of steps 41 and 42 arrive while the checkpoint of step 40 is written.
    ref, run, ev = slow_writer_run(keel, corpus, work, "async_reference", "async_nan",
                                   "kind=nan,step=41,repeat=2")
    failures = resume_consistency(ev)
    rb = first_rollback(ev, failures)
    if rb and rb["step"] != 40:
        failures.append(f"rolled back to step {rb['step']}, not to the checkpoint of step "
                        "40 that was being written")
    lost = [e["steps_lost"] for e in ev if e.get("steps_lost")]
    if any(x > CKPT_EVERY for x in lost):
        failures.append(f"a failure lost more than {CKPT_EVERY} steps: {lost}")
    if params_digest(ref) != params_digest(run):
        failures.append("final parameters differ from the fault-free run")
    if failures:
        sys.exit("FAIL: " + "; ".join(failures))
    print("rollback_async: PASS")


def rank_pids(run, rank):
    """The pids of the `keel train` rank processes of this run with that MPI rank."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
            if b"train" not in argv or f"run.dir={run}".encode() not in argv or b"launch" in argv:
                continue
            with open(f"/proc/{d}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue  # gone meanwhile
        if f"OMPI_COMM_WORLD_RANK={rank}".encode() in env:
            pids.append(int(d))
    return pids


def freeze_when_injected(run, fault_id, rank, log, stop):
    """Once fault `fault_id` fired on `rank`, SIGSTOPs that rank's process, as a
    frozen node or a process stuck in the kernel would be: its own watchdog
    thread stops with it, so only the other ranks can report the hang. mpirun's
    SIGKILL ends the stopped process when the world goes down."""
    path = os.path.join(run, "events.jsonl")
    while not stop.is_set():
        ev = []
        try:
            ev = events(run) if os.path.exists(path) else []
        except ValueError:
            pass  # a line being written
        if any(e["event"] == "inject" and e.get("fault_id") == fault_id for e in ev):
            pids = rank_pids(run, rank)
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
            log.append(f"fault {fault_id} fired: SIGSTOP rank {rank} (pid {pids})")
            return
        time.sleep(0.02)


def check_hang_blame(keel, corpus, work):
    # Each rank's watchdog times its own step, so when one rank hangs every
    # rank's watchdog fires within moments of the others. The first hang
    # freezes rank 2 whole (SIGSTOP, watchdog included): the ranks still alive
    # are the only ones that can report it, and each of them must name rank 2,
    # not itself. The second hang (rank 1, in a kernel) leaves the hung rank's
    # watchdog running.
    ov = tiny_overrides(corpus, work, 45, CKPT_EVERY)
    plan = "kind=hang,step=15,rank=2;kind=hang,step=35,rank=1,where=kernel"
    name = "hang_blame"
    run = os.path.join(work, name)
    shutil.rmtree(run, ignore_errors=True)
    stop, log = threading.Event(), []
    watcher = threading.Thread(target=freeze_when_injected, args=(run, 0, 2, log, stop))
    watcher.start()
    try:
        run, rc, secs, out = launch(keel, work, name, ov, faults=plan, ranks=3)
    finally:
        stop.set()
        watcher.join()
    print("\n".join(log))
    must_finish(run, rc, secs, out, name)
    ev = printed_events(run)
    failures = []
    if not log:
        failures.append("rank 2 was never frozen")
    for fid, rank in enumerate([2, 1]):
        f = hang_blame_failure(ev, fid, rank, f"hang {fid} on rank {rank}")
        if f:
            failures.append(f)
    if any(e["event"] == "exclude" for e in ev):
        failures.append("a rank was excluded after two hangs on different ranks")
    if failures:
        sys.exit("FAIL: " + "; ".join(failures))
    print("hang_blame: PASS")


def check_hang_blame_snapshot(keel, corpus, work):
    # Whether rank 0 still waits in the snapshot copy when rank 1 hangs
    # depends on how far the copy got before: three hangs make a run that
    # blames nobody likely to show (each one did about half the time).
    ov = tiny_overrides(corpus, work, 60, 15, ["dist.zero1=true", "checkpoint.async=true",
                                               "dist.compression=none", "resilience.exclude_after=1000",
                                               "resilience.restart_budget=20"])
    name = "hang_blame_snapshot"
    steps = [20, 34, 48]
    plan = ";".join(f"kind=hang,step={s},rank=1,where=kernel" for s in steps)
    run, rc, secs, out = launch(keel, work, name, ov, faults=plan)
    must_finish(run, rc, secs, out, name)
    ev = printed_events(run)
    failures = []
    for fid, step in enumerate(steps):
        f = hang_blame_failure(ev, fid, 1, f"hang at step {step} on rank 1")
        if f:
            failures.append(f)
    if failures:
        sys.exit("FAIL: " + "; ".join(failures))
    print("hang_blame_snapshot: PASS")


def check_snapshot_resume_checkpoint(keel, corpus, work):
    # Rank 0, the writer, dies at step 21 with the checkpoint of step 20 still unwritten.
    ref, run, ev = slow_writer_run(keel, corpus, work, "snapshot_resume_reference",
                                   "snapshot_resume",
                                   "kind=kill,step=21,rank=0;kind=nan,step=27,repeat=2")
    failures = resume_consistency(ev)
    resumes = [e for e in ev if e["event"] == "resume"]
    if not resumes or resumes[0].get("detail") != "memory":
        failures.append("the world after the kill did not resume from the in-memory snapshot")
    rb = first_rollback(ev, failures)
    if rb and rb["steps_lost"] > CKPT_EVERY:
        failures.append(f"the rollback lost {rb['steps_lost']} steps, more than "
                        f"checkpoint.every {CKPT_EVERY}")
    if params_digest(ref) != params_digest(run):
        failures.append("final parameters differ from the fault-free run")
    if failures:
        sys.exit("FAIL: " + "; ".join(failures))
    print("snapshot_resume_checkpoint: PASS")


def train(keel, ov, run, env=None, wait=True):
    cmd = [keel, "train"] + ov + [f"run.dir={run}"]
    e = dict(os.environ, OMP_NUM_THREADS="1")
    e.update(env or {})
    log = open(run + ".log", "a")
    p = subprocess.Popen(cmd, env=e, stdout=log, stderr=subprocess.STDOUT)
    if wait:
        p.wait()
    return p


def step_dirs_missing_files(ckpt):
    bad = []
    for d in sorted(glob.glob(os.path.join(ckpt, "step-*"))):
        man = os.path.join(d, "manifest.json")
        if not os.path.exists(man):
            bad.append(f"{os.path.basename(d)} has no manifest")
            continue
        with open(man) as f:
            files = [x["name"] for x in json.load(f)["files"]]
        missing = [x for x in files if not os.path.exists(os.path.join(d, x))]
        if missing:
            bad.append(f"{os.path.basename(d)} misses {missing}")
    return bad


def check_retention(keel, corpus, work):
    failures = []
    run = os.path.join(work, "retention")
    shutil.rmtree(run, ignore_errors=True)
    os.makedirs(work, exist_ok=True)
    ckpt = os.path.join(run, "checkpoints")
    ov = tiny_overrides(corpus, work, 20, 10, ["checkpoint.keep_last=1"])
    p = train(keel, ov, run)
    if p.returncode != 0:
        sys.exit(f"FAIL: the first run exited {p.returncode}")
    # What a kill in the middle of deleting or saving leaves: a newer step
    # directory whose manifest is already gone, the halves of a move aside,
    # the temporary of `latest`.
    half = os.path.join(ckpt, "step-00000030")
    os.makedirs(half)
    shutil.copy(os.path.join(ckpt, "step-00000020", "params.safetensors"), half)
    os.makedirs(os.path.join(ckpt, ".del-step-00000010-4242"))
    os.makedirs(os.path.join(ckpt, ".tmp-step-00000040-4242"))
    with open(os.path.join(ckpt, "latest.tmp.4242.00000000deadbeef"), "w") as f:
        f.write("step-00000040\n")
    p = train(keel, ov, run)
    if p.returncode != 0:
        failures.append(f"the resumed run exited {p.returncode}")
    ev = printed_events(run)
    corrupt = [e for e in ev if e["event"] == "fault" and e["detector"] == "checkpoint_corrupt"]
    if corrupt:
        failures.append(f"a half-deleted directory was taken for a checkpoint: {corrupt[0]['detail']}")
    res = [e for e in ev if e["event"] == "resume"]
    if not res or res[0]["step"] != 20:
        failures.append(f"did not resume from step 20: {res}")
    left = sorted(x for x in os.listdir(ckpt) if x.startswith(".") or ".tmp." in x)
    if left:
        failures.append(f"leftovers not cleaned at start: {left}")
    failures += step_dirs_missing_files(ckpt)
    print(f"after the restart: {sorted(os.listdir(ckpt))}")

    # SIGKILL while retention deletes an old checkpoint (held there for 2 s).
    run2 = os.path.join(work, "retention_kill")
    shutil.rmtree(run2, ignore_errors=True)
    ck2 = os.path.join(run2, "checkpoints")
    ov2 = tiny_overrides(corpus, work, 100, 5, ["checkpoint.keep_last=1", "checkpoint.async=false"])
    p = train(keel, ov2, run2, env={"KEEL_FAULT_CKPT_DELETE_SLEEP_MS": "2000"}, wait=False)
    deadline = time.time() + 60
    seen = False
    while time.time() < deadline and p.poll() is None:
        if os.path.isdir(ck2) and any(x.startswith(".del-") for x in os.listdir(ck2)):
            seen = True
            time.sleep(0.3)
            break
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    listing = sorted(os.listdir(ck2)) if os.path.isdir(ck2) else []
    print(f"killed during a delete ({'caught in the act' if seen else 'no delete seen'}): {listing}")
    failures += step_dirs_missing_files(ck2)
    if not seen:
        failures.append("the deletion was never seen moved out of the checkpoint namespace")
    p = train(keel, ov2, run2)
    if p.returncode != 0:
        failures.append(f"the run resumed after the kill exited {p.returncode}")
    listing = sorted(os.listdir(ck2))
    print(f"after the restart: {listing}")
    if [x for x in listing if x.startswith(".")]:
        failures.append(f"the interrupted delete was not cleaned at start: {listing}")
    if failures:
        sys.exit("FAIL: " + "; ".join(failures))
    print("retention: PASS")


def check_skipped_checkpoint(keel, corpus, work):
    """A checkpoint due at a step on the skip list is still written: a later
    failure then loses at most checkpoint.every steps (soak seed 270667174 lost
    30 of an interval of 15, the spike having been at a checkpoint step)."""
    run = os.path.join(work, "skipped_checkpoint")
    shutil.rmtree(run, ignore_errors=True)
    ov = tiny_overrides(corpus, work, 25, 10, ["resilience.skip_steps=20"])
    p = train(keel, ov, run)
    steps = sorted(os.listdir(os.path.join(run, "checkpoints"))) if p.returncode == 0 else []
    print(f"exit {p.returncode}; checkpoints: {steps}", flush=True)
    if p.returncode != 0:
        sys.exit(f"FAIL: the run exited {p.returncode}")
    if "step-00000020" not in steps:
        sys.exit("FAIL: no checkpoint at step 20, a step on the skip list")
    print("skipped_checkpoint: PASS")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--keel", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("mode", choices=["zero1_sdc", "rollback_async", "hang_blame",
                                     "hang_blame_snapshot", "snapshot_resume_checkpoint",
                                     "retention", "skipped_checkpoint"])
    a = ap.parse_args()
    os.makedirs(a.work, exist_ok=True)
    {"zero1_sdc": check_zero1_sdc, "rollback_async": check_rollback_async,
     "hang_blame": check_hang_blame, "hang_blame_snapshot": check_hang_blame_snapshot,
     "snapshot_resume_checkpoint": check_snapshot_resume_checkpoint,
     "retention": check_retention,
     "skipped_checkpoint": check_skipped_checkpoint}[a.mode](a.keel, a.corpus, a.work)


if __name__ == "__main__":
    main()
