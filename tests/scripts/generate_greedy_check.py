#!/usr/bin/env python3
"""`keel generate --temperature 0` against an independent oracle.

Runs greedy generation (the serving engine: KV cache, inference kernels) with
--logits-out, which also scores prompt + output in one forward pass of the
*training* model. Checks: exit 0; stdout is exactly the prompt, the
continuation and a newline (logs go to stderr), where the continuation is the
generated ids decoded here from the run's tokenizer.json (GPT-2's byte-level
alphabet, read independently of keel); exactly N ids came out; every id is
the training model's argmax at its position (a near tie within 1e-4 may go
either way); a second run prints the same bytes.

Usage: generate_greedy_check.py KEEL RUN_DIR PROMPT N OUT_JSON
"""
import json
import os
import subprocess
import sys


def gpt2_unicode_to_byte():
    """GPT-2's bytes_to_unicode table, inverted: token-string character -> byte."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + \
        list(range(ord("\xae"), ord("\xff") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def decoder(run):
    """ids -> bytes from the run's keel-bpe tokenizer.json (vocab in GPT-2's alphabet)."""
    with open(os.path.join(run, "tokenizer.json")) as f:
        vocab = json.load(f)["vocab"]
    table = gpt2_unicode_to_byte()
    tokens = [bytes(table[ch] for ch in v) for v in vocab]
    return lambda ids: b"".join(tokens[i] for i in ids)


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
    # The printed continuation must be the generated ids' text, not merely
    # follow the echoed prompt.
    decode = decoder(run)
    if decode(j["prompt_ids"]) != prompt.encode():
        sys.exit(f"prompt ids decode to {decode(j['prompt_ids'])!r}, not the prompt {prompt!r}")
    want = prompt.encode() + decode(ids) + b"\n"
    if text != want:
        sys.exit(f"stdout is not prompt + the generated ids' text + newline:\n"
                 f"  printed  {text!r}\n  expected {want!r}")
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
