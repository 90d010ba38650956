#!/usr/bin/env python3
"""`keel generate --temperature 0` against an independent oracle.

Runs greedy generation (the serving engine: KV cache, inference kernels) with
--logits-out, which also scores prompt + output in one forward pass of the
*training* model. Checks: exit 0; stdout is exactly the prompt, the
continuation and a newline (logs go to stderr); exactly N ids came out; every
id is the training model's argmax at its position (a near tie within 1e-4
may go either way); a second run prints the same bytes.

Usage: generate_greedy_check.py KEEL RUN_DIR PROMPT N OUT_JSON
"""
import json
import subprocess
import sys


def main():
    keel, run, prompt, n, out = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
    cmd = [keel, "generate", "--run", run, "--prompt", prompt, "--max-tokens", str(n),
           "--temperature", "0", "--no-stop", "--logits-out", out]
    runs = [subprocess.run(cmd, capture_output=True) for _ in range(2)]
    for r in runs:
        sys.stderr.write(r.stderr.decode(errors="replace"))
        if r.returncode != 0:
            sys.exit(f"keel generate exited {r.returncode}")
    text = runs[0].stdout
    print(text.decode(errors="replace"))
    if not (text.startswith(prompt.encode()) and text.endswith(b"\n")):
        sys.exit(f"stdout is not prompt + continuation + newline: {text!r}")
    if runs[1].stdout != text:
        sys.exit(f"two greedy runs differ: {text!r} vs {runs[1].stdout!r}")
    with open(out) as f:
        j = json.load(f)
    ids, rows = j["ids"], j["logits"]
    if len(ids) != n or len(rows) != n:
        sys.exit(f"expected {n} ids and logit rows, got {len(ids)} and {len(rows)}")
    bad = 0
    for k, (i, row) in enumerate(zip(ids, rows)):
        best = max(range(len(row)), key=lambda v: (row[v], -v))
        if i != best and row[best] - row[i] > 1e-4:
            print(f"position {k}: engine chose {i} ({row[i]:.6f}), training model argmax {best} ({row[best]:.6f})")
            bad += 1
    print(f"greedy ids equal to the training model's argmax: {n - bad}/{n}")
    if bad:
        sys.exit(1)


if __name__ == "__main__":
    main()
