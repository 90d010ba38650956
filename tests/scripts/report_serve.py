#!/usr/bin/env python3
"""`keel report --serve` over a real socket: the page and /data.json are served
on 127.0.0.1, follow the run directory as lines are appended (a live run),
and anything but GET is refused.

usage: report_serve.py KEEL RUN_DIR WORK_DIR
"""
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.headers.get("Content-Type", ""), r.read().decode()


def main():
    keel, src, work = sys.argv[1], sys.argv[2], sys.argv[3]
    run = os.path.join(work, "live_run")
    shutil.rmtree(run, ignore_errors=True)
    os.makedirs(run)
    shutil.copy(os.path.join(src, "config.toml"), run)
    lines = [l for l in open(os.path.join(src, "metrics.jsonl")) if l.strip()]
    half = len(lines) // 2
    with open(os.path.join(run, "metrics.jsonl"), "w") as f:
        f.writelines(lines[:half])
    proc = subprocess.Popen([keel, "report", "--serve", "--run", run, "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()
        m = re.search(r"serving (http://127\.0\.0\.1:(\d+)/)", line)
        if not m:
            fail(f"no URL on the first line: {line!r}")
        base = m.group(1)
        status, ctype, page = get(base)
        if status != 200 or "text/html" not in ctype or 'id="keel-data"' not in page:
            fail(f"GET / returned {status} {ctype}")
        if '"live":true' not in page:
            fail("the served page is not in live mode")
        _, ctype, body = get(base + "data.json")
        d = json.loads(body)
        first = d["runs"][0]["final_step"]
        if first != json.loads(lines[half - 1])["step"]:
            fail(f"data.json final_step {first}, file has {half} lines")
        # The run goes on: more lines appear, the next poll sees them.
        with open(os.path.join(run, "metrics.jsonl"), "a") as f:
            f.writelines(lines[half:])
        d2 = json.loads(get(base + "data.json")[2])
        last = d2["runs"][0]["final_step"]
        if last != json.loads(lines[-1])["step"]:
            fail(f"after appending, data.json final_step {last}, expected {json.loads(lines[-1])['step']}")
        # A fault appears in events.jsonl while served.
        with open(os.path.join(run, "events.jsonl"), "w") as f:
            f.write(json.dumps({"time": 1.75e9, "event": "fault", "detector": "nan", "rank": 0, "step": 3,
                                "steps_lost": 1, "time_lost_s": 0.5, "world_size": 1, "detail": ""}) + "\n")
        d3 = json.loads(get(base + "data.json")[2])
        if [e["detector"] for e in d3["runs"][0]["events"]] != ["nan"]:
            fail(f"events not followed: {d3['runs'][0]['events']}")
        # Read-only: POST is refused and changes nothing.
        req = urllib.request.Request(base + "data.json", data=b"x", method="POST")
        try:
            urllib.request.urlopen(req, timeout=10)
            fail("POST was accepted")
        except urllib.error.HTTPError as e:
            if e.code != 405:
                fail(f"POST answered {e.code}, expected 405")
        try:
            get(base + "../../etc/passwd")
            fail("a path outside the two routes was served")
        except urllib.error.HTTPError as e:
            if e.code != 404:
                fail(f"unknown path answered {e.code}")
        print(f"serve ok: {base}, final_step {first} -> {last}, events followed, POST 405")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    main()
