#!/usr/bin/env python3
"""A native llama.cpp as bench-serve's peer: runs the user's llama-bench
(LLAMA_BENCH=path/to/llama-bench, built for this CPU) on keel's GGUF export and
prints one JSON line in the shape of scripts/bench_serve_llamacpp.js, so the
summary puts it beside keel and the prebuilt node-llama-cpp.

llama-bench -o json prints a list of tests; the one with n_gen 0 is prompt
processing (prefill), the one with n_prompt 0 is generation at batch 1.
When llama-batched-bench sits beside llama-bench (same build), it also
measures batch-1 generation with 2,048 tokens already in the cache (its
default f16 cache; flash attention off and on, the faster kept), keel's
decode_b1_ctx2048 case.
Usage: bench_serve_llama_bench.py LLAMA_BENCH GGUF FORMAT THREADS PROMPT STEPS REPS
"""
import json
import os
import subprocess
import sys

LONG_CONTEXT = 2048


def long_context(exe, gguf, threads, steps, reps):
    """Best batch-1 generation tokens/s after a LONG_CONTEXT-token prompt, and
    whether flash attention gave it; None when llama-batched-bench is absent."""
    batched = os.path.join(os.path.dirname(exe), "llama-batched-bench")
    if not os.access(batched, os.X_OK):
        return None
    best = (0.0, None)
    for fa in (False, True):
        for _ in range(int(reps)):
            cmd = [batched, "-m", gguf, "-t", threads, "-c", str(LONG_CONTEXT + int(steps) + 16),
                   "-npp", str(LONG_CONTEXT), "-ntg", steps, "-npl", "1",
                   "--output-format", "jsonl"] + (["-fa"] if fa else [])
            p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            if p.returncode != 0:
                sys.exit(f"bench_serve_llama_bench: {' '.join(cmd)} exited {p.returncode}: "
                         f"{p.stderr.strip()[-2000:]}")
            rows = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
            if not rows or "speed_tg" not in rows[-1]:
                sys.exit(f"bench_serve_llama_bench: no speed_tg in {batched}'s output")
            if rows[-1]["speed_tg"] > best[0]:
                best = (rows[-1]["speed_tg"], fa)
    return best


def main():
    if len(sys.argv) != 8:
        sys.exit(__doc__)
    exe, gguf, fmt, threads, prompt, steps, reps = sys.argv[1:]
    cmd = [exe, "-m", gguf, "-t", threads, "-p", prompt, "-n", steps, "-r", reps, "-o", "json"]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        sys.exit(f"bench_serve_llama_bench: {' '.join(cmd)} exited {p.returncode}: "
                 f"{p.stderr.strip()[-2000:]}")
    try:
        tests = json.loads(p.stdout)
    except json.JSONDecodeError as e:
        sys.exit(f"bench_serve_llama_bench: {exe} printed no JSON list ({e}): {p.stdout[:500]}")
    pp = next((t for t in tests if t.get("n_gen") == 0 and t.get("n_prompt", 0) > 0), None)
    tg = next((t for t in tests if t.get("n_prompt") == 0 and t.get("n_gen", 0) > 0), None)
    if not pp or not tg:
        sys.exit(f"bench_serve_llama_bench: no prompt and generation tests in {exe}'s output")
    out = {
        "bench": "serve", "engine": "llama.cpp native (llama-bench)", "format": fmt,
        "threads": int(threads), "prompt": int(prompt), "steps": int(steps), "reps": int(reps),
        "prefill_tok_s": pp["avg_ts"], "ttft_ms": 1e3 * int(prompt) / pp["avg_ts"],
        "decode_b1_tok_s": tg["avg_ts"],
        "build": f"{tg.get('build_commit', '?')} ({tg.get('build_number', '?')})",
        "cpu": tg.get("cpu_info", "")}
    lc = long_context(exe, gguf, threads, steps, reps)
    if lc:
        out["decode_b1_ctx2048_tok_s"] = lc[0]
        out["ctx2048_kv_cache"] = "f16"
        out["ctx2048_flash_attn"] = lc[1]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
