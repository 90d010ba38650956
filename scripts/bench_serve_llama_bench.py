#!/usr/bin/env python3
"""A native llama.cpp as bench-serve's peer: runs the user's llama-bench
(LLAMA_BENCH=path/to/llama-bench, built for this CPU) on keel's GGUF export and
prints one JSON line in the shape of scripts/bench_serve_llamacpp.js, so the
summary puts it beside keel and the prebuilt node-llama-cpp.

llama-bench -o json prints a list of tests; the one with n_gen 0 is prompt
processing (prefill), the one with n_prompt 0 is generation at batch 1.
Usage: bench_serve_llama_bench.py LLAMA_BENCH GGUF FORMAT THREADS PROMPT STEPS REPS
"""
import json
import subprocess
import sys


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
    print(json.dumps({
        "bench": "serve", "engine": "llama.cpp native (llama-bench)", "format": fmt,
        "threads": int(threads), "prompt": int(prompt), "steps": int(steps), "reps": int(reps),
        "prefill_tok_s": pp["avg_ts"], "ttft_ms": 1e3 * int(prompt) / pp["avg_ts"],
        "decode_b1_tok_s": tg["avg_ts"],
        "build": f"{tg.get('build_commit', '?')} ({tg.get('build_number', '?')})",
        "cpu": tg.get("cpu_info", "")}))


if __name__ == "__main__":
    main()
