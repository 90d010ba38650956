#!/usr/bin/env python3
"""Renders `keel report` pages in headless Chromium and checks them.

For each page: Chromium loads it once with --dump-dom (the page publishes
where each chart is, whether it had data, script errors and its render time
in <body data-keel-status>), then once more with --screenshot at the full
page height; the PNG is decoded here (zlib, no other module) and every chart
that had data must have coloured (non-grey) pixels inside its box.

Modes (each a ctest):
  run      DIR         report of a run directory
  damaged  DIR         copies DIR with a truncated metrics line, an empty
                       events.jsonl and no summary.json; page must still draw
  compare  DIR DIR...  --compare overlay of several runs
  large                synthetic 100,000-step run: page < 2 MB, renders
"""
import argparse
import html
import json
import math
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib

import numpy as np  # /usr/bin/python3 has it (Debian's python3-numpy)

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--hide-scrollbars",
                  "--force-device-scale-factor=1", "--enable-logging=stderr", "--v=0"]
WIDTH = 1400


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def chromium_binary():
    for c in ("chromium", "chromium-browser", "google-chrome"):
        p = shutil.which(c)
        if p:
            return p
    fail("chromium not found (scripts/setup.sh installs Debian's chromium package)")


def run_chromium(args, profile, timeout=60):
    cmd = [chromium_binary()] + CHROMIUM_FLAGS + ["--user-data-dir=" + profile] + args
    t = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    return p, time.time() - t


def console_errors(stderr):
    """Console lines Chromium logged (uncaught errors, console.error, warnings)."""
    # The page itself never writes to the console: any console line is a failure.
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def decode_png(path):
    """(width, height, (h, w, 3) int16 RGB array, bytes per pixel) of an 8-bit RGB/RGBA PNG."""
    data = open(path, "rb").read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        fail(path + ": not a PNG")
    pos, idat, w = 8, b"", None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
            if depth != 8 or ctype not in (2, 6) or interlace:
                fail(f"{path}: unsupported PNG (depth {depth}, colour type {ctype}, interlace {interlace})")
            bpp = 3 if ctype == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(h, 1 + w * bpp)
    img = np.zeros((h, w * bpp), dtype=np.uint8)
    prev = np.zeros(w * bpp, dtype=np.uint8)
    for y in range(h):
        f, line = raw[y, 0], raw[y, 1:]
        if f == 0:
            cur = line.copy()
        elif f == 1:  # Sub: running sum along the row, per channel
            cur = (np.cumsum(line.reshape(w, bpp).astype(np.int64), axis=0) % 256).astype(np.uint8).reshape(-1)
        elif f == 2:  # Up
            cur = line + prev
        else:  # Average / Paeth: sequential along the row (rare in Chromium's output)
            cur = bytearray(line.tobytes())
            pv = prev.tobytes()
            for x in range(w * bpp):
                a = cur[x - bpp] if x >= bpp else 0
                b = pv[x]
                if f == 3:
                    cur[x] = (cur[x] + ((a + b) >> 1)) & 255
                else:
                    c = pv[x - bpp] if x >= bpp else 0
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    cur[x] = (cur[x] + (a if pa <= pb and pa <= pc else (b if pb <= pc else c))) & 255
            cur = np.frombuffer(bytes(cur), dtype=np.uint8)
        img[y] = cur
        prev = img[y]
    rows = img.reshape(h, w, bpp)[:, :, :3].astype(np.int16)
    return w, h, rows, bpp


def pixels_in(png, box, pred):
    """How many pixels inside box satisfy pred (on an (h, w, 3) int array)."""
    w, h, rows, _ = png
    sub = rows[max(0, box["y"]):min(h, box["y"] + box["h"]), max(0, box["x"]):min(w, box["x"] + box["w"])]
    return int(pred(sub).sum())


def coloured(p):
    """Saturated pixels: data lines and markers, not the grey axes, grid and text."""
    return (p.max(axis=2) - p.min(axis=2)) > 60


def fault_red(p):
    return (p[:, :, 0] > 180) & (p[:, :, 1] < 90) & (p[:, :, 2] < 90)


def check_hover(status, name, metrics):
    """The loss chart's tooltip must show a train loss exactly as metrics.jsonl recorded it."""
    hov = {h["id"]: h["text"] for h in status["hover"]}
    m = re.search(r"train loss: ([-0-9.eE+]+) @ step (\d+)", hov.get("loss-step", ""))
    if not m:
        fail(f"{name}: hovering the loss chart shows {hov.get('loss-step')!r}")
    value, step = m.group(1), int(m.group(2))
    recorded = [json.loads(l) for l in open(metrics) if l.strip()]
    want = [r["loss"] for r in recorded if r.get("step") == step]
    if not want or float(value) != want[-1]:
        fail(f"{name}: hover shows loss {value} at step {step}, metrics.jsonl has {want}")
    print(f"  hover on the loss chart: {hov['loss-step']!r} (recorded: {want[-1]!r})")


def check_page(page, out_dir, name, require_charts, expect_faults=0, expect_text=(), png_name=None, metrics=None):
    """Loads page in Chromium twice (DOM, screenshot) and checks it; returns the status."""
    url = "file://" + os.path.abspath(page)
    with tempfile.TemporaryDirectory(prefix="keel_chromium_") as profile:
        p, dom_s = run_chromium(["--window-size=%d,900" % WIDTH, "--dump-dom", url + "#hover"], profile)
        if p.returncode != 0:
            fail(f"{name}: chromium --dump-dom exited {p.returncode}: {p.stderr[-2000:]}")
        m = re.search(r'data-keel-status="([^"]*)"', p.stdout)
        if not m:
            fail(f"{name}: the page never published its status (script did not finish); "
                 f"console: {console_errors(p.stderr)}")
        status = json.loads(html.unescape(m.group(1)))
        dom = p.stdout
        errs = status["errors"] + console_errors(p.stderr)
        if errs:
            fail(f"{name}: console errors: {errs}")
        if not any(c["drawn"] for c in status["charts"]):
            if require_charts:
                fail(f"{name}: no chart had data")
            for t in expect_text:
                if t not in html.unescape(dom):
                    fail(f"{name}: page does not show {t!r}")
            print(f"{name}: ok; page {os.path.getsize(page)} bytes, no chart had data (shown as such), "
                  f"script render {status['render_ms']} ms")
            return status
        height = min(max(int(status["height"]) + 20, 600), 16000)
        png_path = os.path.join(out_dir, png_name or (name + ".png"))
        if os.path.exists(png_path):
            os.remove(png_path)
        p2, shot_s = run_chromium(["--window-size=%d,%d" % (WIDTH, height), "--screenshot=" + png_path, url], profile)
        if p2.returncode != 0 or not os.path.exists(png_path):
            fail(f"{name}: chromium --screenshot failed ({p2.returncode}): {p2.stderr[-2000:]}")
        errs = console_errors(p2.stderr)
        if errs:
            fail(f"{name}: console errors in the screenshot load: {errs}")
    if metrics:
        check_hover(status, name, metrics)
    png = decode_png(png_path)
    charts = {c["id"]: c for c in status["charts"]}
    for cid in require_charts:
        if cid not in charts:
            fail(f"{name}: chart {cid} missing; charts: {sorted(charts)}")
        if not charts[cid]["drawn"]:
            fail(f"{name}: chart {cid} had no data")
    for c in status["charts"]:
        if not c["drawn"]:
            print(f"  chart {c['id']}: no data (shown as such)")
            continue
        if c["y"] + c["h"] > png[1]:
            fail(f"{name}: chart {c['id']} at y={c['y']} lies outside the {png[1]}-pixel screenshot")
        n = pixels_in(png, c, coloured)
        print(f"  chart {c['id']}: box {c['w']}x{c['h']} at ({c['x']},{c['y']}), {n} coloured pixels")
        if n < 12:  # one recorded point is a dot of about 20 pixels
            fail(f"{name}: chart {c['id']} looks blank ({n} coloured pixels in its box)")
    if expect_faults:
        marks = dom.count('class="fault-mark"')
        if marks < expect_faults:
            fail(f"{name}: {marks} fault markers on the step charts, expected >= {expect_faults}")
        red = pixels_in(png, charts["loss-step"], fault_red)
        print(f"  loss chart: {marks} fault markers in the DOM, {red} fault-red pixels")
        if red < 20:
            fail(f"{name}: no fault marker visible on the loss chart")
    for t in expect_text:
        if t not in html.unescape(dom):
            fail(f"{name}: page does not show {t!r}")
    print(f"{name}: ok; page {os.path.getsize(page)} bytes, script render {status['render_ms']} ms, "
          f"load to drawn {status['page_ms']} ms, chromium dump {dom_s:.2f} s, screenshot {shot_s:.2f} s -> {png_path}")
    return status


def keel_report(keel, args):
    p = subprocess.run([keel, "report"] + args, capture_output=True, text=True, timeout=120)
    sys.stdout.write(p.stdout)
    sys.stderr.write(p.stderr)
    if p.returncode != 0:
        fail(f"keel report {' '.join(args)} exited {p.returncode}")
    return p


TRAINING_CHARTS = ["loss-step", "loss-tokens", "lr", "grad-norm", "tokens-per-s", "mfu", "memory"]


def has_faults(d):
    try:
        return any(json.loads(l).get("event") == "fault" for l in open(os.path.join(d, "events.jsonl")) if l.strip())
    except (OSError, ValueError):
        return False


def mode_run(a):
    d = a.dirs[0]
    page = os.path.join(a.out, "report_run.html")
    keel_report(a.keel, ["--run", d, "--out", page])
    faults = has_faults(d)
    check_page(page, a.out, "report_run", TRAINING_CHARTS + (["fault-timeline"] if faults else []),
               expect_faults=1 if faults else 0,
               expect_text=["effective-training-time ratio", "backend"] + (["time to recover (s)"] if faults else []),
               metrics=os.path.join(d, "metrics.jsonl"))


def mode_damaged(a):
    src = a.dirs[0]
    d = os.path.join(a.out, "damaged_run")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    for f in ("config.toml", "environment.json"):
        if os.path.exists(os.path.join(src, f)):
            shutil.copy(os.path.join(src, f), d)
    lines = open(os.path.join(src, "metrics.jsonl")).read().splitlines()
    if len(lines) < 5:
        fail("the source run has fewer than 5 metrics lines")
    # The last line cut in the middle, as by a crash during the write.
    with open(os.path.join(d, "metrics.jsonl"), "w") as f:
        f.write("\n".join(lines[:-1]) + "\n" + lines[-1][:len(lines[-1]) // 2])
    open(os.path.join(d, "events.jsonl"), "w").close()
    page = os.path.join(a.out, "report_damaged.html")
    p = keel_report(a.keel, ["--run", d, "--out", page])
    n = len(lines)
    for want in (f"metrics.jsonl:{n}: truncated last line, skipped", "events.jsonl: empty", "summary.json: missing"):
        if want not in p.stderr:
            fail(f"keel report did not note {want!r}")
    check_page(page, a.out, "report_damaged", TRAINING_CHARTS,
               expect_text=[f"metrics.jsonl:{n}: truncated last line, skipped", "events.jsonl: empty, no events",
                            "summary.json: missing, skipped", "Skipped while reading the run directory"])
    # The other damage: no events.jsonl and no metrics.jsonl at all.
    os.remove(os.path.join(d, "events.jsonl"))
    os.remove(os.path.join(d, "metrics.jsonl"))
    page2 = os.path.join(a.out, "report_missing.html")
    keel_report(a.keel, ["--run", d, "--out", page2])
    check_page(page2, a.out, "report_missing", [],
               expect_text=["metrics.jsonl: missing, skipped", "events.jsonl: missing, skipped"])


def mode_compare(a):
    page = os.path.join(a.out, "report_compare.html")
    keel_report(a.keel, ["--compare"] + a.dirs + ["--out", page])
    st = check_page(page, a.out, "report_compare", TRAINING_CHARTS,
                    expect_text=[os.path.basename(os.path.normpath(d)) for d in a.dirs])
    print(f"compare: {len(a.dirs)} runs, {len(st['charts'])} charts")


def mode_large(a):
    d = os.path.join(a.out, "large_run")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    steps = 100000
    with open(os.path.join(d, "metrics.jsonl"), "w") as f:
        for s in range(1, steps + 1):
            val = f'"val_loss":{10.4 / math.sqrt(s):.6f},' if s % 1000 == 0 else ""
            f.write(f'{{"step":{s},"loss":{10 / math.sqrt(s) + 0.05 * math.sin(s):.6f},{val}"lr":{1e-3 * min(1, s / 2000):.6g},'
                    f'"grad_norm":{1 + 0.5 * math.sin(s / 500):.5f},"tokens_per_s":{50000 + s % 97},"mfu":0.31,'
                    f'"peak_rss_mb":{800 + s / 1000:.2f},"step_seconds":0.2}}\n')
    t0 = 1.7e9
    with open(os.path.join(d, "events.jsonl"), "w") as f:
        f.write(json.dumps({"time": t0, "event": "start", "detector": "", "rank": -1, "step": 0, "steps_lost": 0,
                            "time_lost_s": 0, "world_size": 2, "detail": ""}) + "\n")
        for k, s in enumerate((25000, 61000)):
            t = t0 + s * 0.2 + 40 * k
            f.write(json.dumps({"time": t, "event": "fault", "detector": "hang", "rank": 1, "step": s, "steps_lost": 0,
                                "time_lost_s": 0, "world_size": 2, "detail": "synthetic"}) + "\n")
            f.write(json.dumps({"time": t + 40, "event": "resume", "detector": "hang", "rank": -1, "step": s - 500,
                                "steps_lost": 500, "time_lost_s": 140, "world_size": 2, "detail": ""}) + "\n")
        f.write(json.dumps({"time": t0 + steps * 0.2 + 80, "event": "finish", "detector": "", "rank": -1,
                            "step": steps, "steps_lost": 0, "time_lost_s": 0, "world_size": 2, "detail": ""}) + "\n")
    with open(os.path.join(d, "config.toml"), "w") as f:
        f.write("[train]\nbatch_size = 16\nseq_len = 128\ngrad_accum = 1\nsteps = 100000\nbackend = \"cpu\"\n")
    page = os.path.join(a.out, "report_large.html")
    t = time.time()
    keel_report(a.keel, ["--run", d, "--out", page])
    print(f"keel report of {steps} steps: {time.time() - t:.2f} s")
    size = os.path.getsize(page)
    if size >= 2 * 1024 * 1024:
        fail(f"page of a {steps}-step run is {size} bytes (>= 2 MB)")
    check_page(page, a.out, "report_large", TRAINING_CHARTS + ["fault-timeline"], expect_faults=2,
               metrics=os.path.join(d, "metrics.jsonl"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["run", "damaged", "compare", "large"])
    ap.add_argument("--keel", required=True)
    ap.add_argument("--out", required=True, help="directory for pages and screenshots")
    ap.add_argument("dirs", nargs="*")
    a = ap.parse_intermixed_args()
    os.makedirs(a.out, exist_ok=True)
    {"run": mode_run, "damaged": mode_damaged, "compare": mode_compare, "large": mode_large}[a.mode](a)


if __name__ == "__main__":
    main()
