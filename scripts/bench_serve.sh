#!/usr/bin/env bash
# `make bench-serve`: serving speed of keel against llama.cpp on the same
# model, in one run. bench_serve builds a gpt2-124m-sized llama (untrained),
# measures keel's forward for f32/int8/q8_0/q4 and saves the model as a run
# directory; `keel export --format gguf` turns it into f32 and q8_0 GGUF files
# that llama.cpp (node-llama-cpp, third_party/node-llama-cpp) then runs with
# the same prompt length, step count and threads. Prints every JSON line and
# a last one with the ratios keel / llama.cpp, the batch-1 roofline fractions
# of both (weight bytes per token x tokens/s / read bandwidth measured by
# bench_serve) and the load average before and after (the figures are only
# as good as the machine was quiet). Every keel format is measured with an
# f32 and a bf16 KV cache; with LLAMA_BENCH (and llama-batched-bench beside
# it) a native llama.cpp runs too, batch-1 decode after 2,048 tokens
# included. Raw output: <build>/bench/serve/.
# Usage: scripts/bench_serve.sh [build-dir]
# Environment: KEEL_BENCH_THREADS (2), KEEL_BENCH_PROMPT (128),
# KEEL_BENCH_STEPS (32 decode steps per window), KEEL_BENCH_REPS (3 windows).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD="$(cd "${1:-$ROOT/build}" && pwd)"
OUT="$BUILD/bench/serve"
THREADS="${KEEL_BENCH_THREADS:-2}"
PROMPT="${KEEL_BENCH_PROMPT:-128}"
STEPS="${KEEL_BENCH_STEPS:-32}"
REPS="${KEEL_BENCH_REPS:-3}"
LOAD_BEFORE="$(cut -d' ' -f1 /proc/loadavg)"
mkdir -p "$OUT"
cd "$ROOT"
[ -n "${KEEL_BENCH_NO_BUILD:-}" ] || cmake --build "$BUILD" --target bench_serve keel -j "${JOBS:-2}" >&2

echo "[bench-serve] keel: f32, int8, q8_0, q4" >&2
rm -rf "$OUT/run"
"$BUILD/bench_serve" --save-run "$OUT/run" --threads "$THREADS" --prompt "$PROMPT" \
  --steps "$STEPS" --reps "$REPS" >"$OUT/keel.jsonl" 2>"$OUT/keel.log" ||
  { cat "$OUT/keel.log" >&2; exit 1; }
cat "$OUT/keel.jsonl"

: >"$OUT/llamacpp.jsonl"
for dt in f32 q8_0; do
  gguf="$OUT/model-$dt.gguf"
  if ! "$BUILD/keel" export --run "$OUT/run" --format gguf --dtype "$dt" --out "$gguf" \
      >"$OUT/export-$dt.log" 2>&1; then
    echo "[bench-serve] keel export --format gguf --dtype $dt failed; see $OUT/export-$dt.log" >&2
    continue
  fi
  echo "[bench-serve] llama.cpp: $dt" >&2
  node "$ROOT/scripts/bench_serve_llamacpp.js" "$gguf" "$dt" "$THREADS" "$PROMPT" "$STEPS" "$REPS" \
    >>"$OUT/llamacpp.jsonl" \
    2>"$OUT/llamacpp-$dt.log" || echo "[bench-serve] llama.cpp $dt failed; see $OUT/llamacpp-$dt.log" >&2
done
cat "$OUT/llamacpp.jsonl"

# A llama.cpp built for this CPU, when the user has one: the prebuilt binary
# above is several times slower, so ratios against it alone overstate keel.
: >"$OUT/llama_bench.jsonl"
if [ -n "${LLAMA_BENCH:-}" ]; then
  for dt in f32 q8_0 q4_0; do
    gguf="$OUT/model-$dt.gguf"
    if [ ! -f "$gguf" ] && ! "$BUILD/keel" export --run "$OUT/run" --format gguf --dtype "$dt" \
        --out "$gguf" >"$OUT/export-$dt.log" 2>&1; then
      echo "[bench-serve] keel export --format gguf --dtype $dt failed; see $OUT/export-$dt.log" >&2
      continue
    fi
    echo "[bench-serve] native llama.cpp ($LLAMA_BENCH): $dt" >&2
    python3 "$ROOT/scripts/bench_serve_llama_bench.py" "$LLAMA_BENCH" "$gguf" "$dt" "$THREADS" \
      "$PROMPT" "$STEPS" "$REPS" >>"$OUT/llama_bench.jsonl" 2>"$OUT/llama_bench-$dt.log" ||
      echo "[bench-serve] llama-bench $dt failed; see $OUT/llama_bench-$dt.log" >&2
  done
  cat "$OUT/llama_bench.jsonl"
else
  echo "[bench-serve] peer: the prebuilt node-llama-cpp only (slower than a llama.cpp built for" \
    "this CPU); LLAMA_BENCH=path/to/llama-bench adds a native one" >&2
fi

LOAD_AFTER="$(cut -d' ' -f1 /proc/loadavg)"
python3 - "$OUT/keel.jsonl" "$OUT/llamacpp.jsonl" "$LOAD_BEFORE" "$LOAD_AFTER" \
  "$OUT/llama_bench.jsonl" <<'PY'
import json, sys
lines = list(map(json.loads, open(sys.argv[1])))
keel = {j["format"]: j for j in lines if j.get("bench") == "serve"}
features = {j["bench"]: j for j in lines if j.get("bench") != "serve"}
ll = {j["format"]: j for j in map(json.loads, filter(str.strip, open(sys.argv[2])))}
native = {j["format"]: j for j in map(json.loads, filter(str.strip, open(sys.argv[5])))}
out = {"bench": "serve_summary", "load_avg_before": float(sys.argv[3]),
       "load_avg_after": float(sys.argv[4])}
any_keel = next(iter(keel.values()), {})
out["threads"] = any_keel.get("threads")
out["read_bandwidth_gb_s"] = round(any_keel.get("read_bandwidth_gb_s", 0), 2)
out["decode_b1_tok_s"] = {f"keel_{f}": round(j["decode_b1_tok_s"], 1) for f, j in keel.items()}
out["decode_b1_tok_s"].update({f"llamacpp_{f}": round(j["decode_b1_tok_s"], 1) for f, j in ll.items()})
out["roofline_fraction_b1"] = {f"keel_{f}": round(j["roofline_fraction"], 3) for f, j in keel.items()}
# Each keel decode window against the bandwidth measured right after it, as
# long (median over windows): the host's neighbours weigh on both alike.
out["roofline_fraction_b1_paired"] = {
    f"keel_{f}": round(j["roofline_fraction_paired"], 3) for f, j in keel.items()}
# llama.cpp reads the same weights in the same format (GGUF f32 / q8_0 are
# keel's bytes), so keel's bytes per token and bandwidth give its fraction too.
for f, j in ll.items():
    if f in keel:
        out["roofline_fraction_b1"][f"llamacpp_{f}"] = round(
            j["decode_b1_tok_s"] / keel[f]["roofline_b1_tok_s"], 3)
# keel's int8 (per-row) is compared with llama.cpp's 8-bit format too.
for kf, lf in (("f32", "f32"), ("q8_0", "q8_0"), ("int8", "q8_0")):
    if kf in keel and lf in ll:
        for m in ("decode_b1_tok_s", "decode_b8_tok_s", "prefill_tok_s"):
            out[f"{m}_ratio_{kf}_vs_llamacpp_{lf}"] = round(keel[kf][m] / ll[lf][m], 3)
        out[f"ttft_ratio_{kf}_vs_llamacpp_{lf}"] = round(ll[lf]["ttft_ms"] / keel[kf]["ttft_ms"], 3)
if not ll:
    out["llamacpp"] = "unavailable (see the [bench-serve] messages above)"
# The native llama.cpp (LLAMA_BENCH): keel's q4 is GGUF q4_0's block layout.
out["peer"] = ("llama-bench built for this CPU (LLAMA_BENCH) and the prebuilt node-llama-cpp"
               if native else "the prebuilt node-llama-cpp only: set LLAMA_BENCH for a native one")
for lf, j in native.items():
    kf = "q4" if lf == "q4_0" else lf
    out["decode_b1_tok_s"][f"llamacpp_native_{lf}"] = round(j["decode_b1_tok_s"], 1)
    out.setdefault("prefill_tok_s", {})[f"llamacpp_native_{lf}"] = round(j["prefill_tok_s"], 1)
    if kf in keel:
        out["prefill_tok_s"][f"keel_{kf}"] = round(keel[kf]["prefill_tok_s"], 1)
        out["roofline_fraction_b1"][f"llamacpp_native_{lf}"] = round(
            j["decode_b1_tok_s"] / keel[kf]["roofline_b1_tok_s"], 3)
        for m in ("decode_b1_tok_s", "prefill_tok_s"):
            out[f"{m}_ratio_{kf}_vs_native_{lf}"] = round(keel[kf][m] / j[m], 3)
        # 2,048 cached tokens: llama.cpp's f16 cache holds what keel's bf16 one
        # does (2 bytes an element); keel's f32 cache reads twice the bytes.
        m = "decode_b1_ctx2048_tok_s"
        if m in j:
            out.setdefault(f"{m}_kv_f16", {})[f"llamacpp_native_{lf}"] = round(j[m], 1)
            for sfx, kv in (("", "f32"), ("_kv_bf16", "bf16")):
                if m + sfx in keel[kf]:
                    out[f"{m}_ratio_{kf}_kv_{kv}_vs_native_{lf}_kv_f16"] = round(
                        keel[kf][m + sfx] / j[m], 3)
# Compute rooflines (bench_serve): prefill and time to first token against the
# instruction peak of their matmuls, batch-8 decode against the lower of its
# bandwidth and compute rooflines.
for m in ("prefill_roofline_fraction", "ttft_roofline_fraction", "roofline_fraction_b8"):
    got = {f"keel_{f}": round(j[m], 3) for f, j in keel.items() if m in j}
    if got:
        out[m] = got
# Batch 1 with 2,048 positions in the cache, f32 and bf16 caches (--kv-dtype):
# tokens/s and the fraction of the roofline that counts the cache's bytes.
for sfx, kv in (("", "f32"), ("_kv_bf16", "bf16")):
    for m, nd in (("decode_b1_ctx2048_tok_s", 1), ("roofline_fraction_ctx2048", 3)):
        got = {f"keel_{f}": round(j[m + sfx], nd) for f, j in keel.items() if m + sfx in j}
        if got:
            out[f"{m}_kv_{kv}"] = got
    got = {f"keel_{f}": round(j["decode_b1_tok_s" + sfx], 1) for f, j in keel.items()
           if "decode_b1_tok_s" + sfx in j}
    if got and sfx:
        out[f"decode_b1_tok_s_kv_{kv}"] = got
pc = features.get("serve_prefix_cache", {})
for k in ("prefix_tokens", "prefix_cache_ttft_ms_off", "prefix_cache_ttft_ms_on",
          "prefix_cache_ttft_ratio_off_over_on"):
    if k in pc:
        out[k] = round(pc[k], 3) if isinstance(pc[k], float) else pc[k]
jm = features.get("serve_json_mask", {})
for k in ("json_mask_us_per_token", "json_mask_fraction_of_decode_b1_step"):
    if k in jm:
        out[k] = round(jm[k], 4)
print(json.dumps(out))
PY
