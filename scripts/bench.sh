#!/usr/bin/env bash
# `make bench`: builds the benchmark programs, runs them (roofline probes
# first, so every ratio compares with this machine in this run), and prints
# one JSON line per kernel/shape. Raw Google Benchmark output stays in
# <build>/bench/. Usage: scripts/bench.sh [build-dir]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD="$(cd "${1:-$ROOT/build}" && pwd)"
OUT="$BUILD/bench"
mkdir -p "$OUT"
export KEEL_BENCH_THREADS="${KEEL_BENCH_THREADS:-2}"
progs=(bench_roofline bench_gemm bench_kernels bench_qmatmul)

# KEEL_BENCH_NO_BUILD=1 runs programs that are already built.
[ -n "${KEEL_BENCH_NO_BUILD:-}" ] || cmake --build "$BUILD" --target "${progs[@]}" -j "${JOBS:-2}" >&2
for p in "${progs[@]}"; do
  echo "[bench] running $p" >&2
  "$BUILD/$p" --benchmark_out="$OUT/$p.json" --benchmark_out_format=json \
    >"$OUT/$p.log" 2>&1 || echo "[bench] $p failed; see $OUT/$p.log" >&2
done

# Peer: PyTorch's matmul at the same shapes (only /usr/bin/python3 has torch).
rm -f "$OUT/torch.jsonl"
if /usr/bin/python3 -c 'import torch' 2>/dev/null; then
  echo "[bench] running the PyTorch peer" >&2
  coretype="${OPENBLAS_CORETYPE:-}"
  # Same correction keel applies: Debian's OpenBLAS misreads AVX-512 Xeons.
  if [ -z "$coretype" ] && grep -qw avx512f /proc/cpuinfo && grep -qw avx512bw /proc/cpuinfo; then
    coretype=SkylakeX
    grep -qw avx512_bf16 /proc/cpuinfo && coretype=Cooperlake
  fi
  env ${coretype:+OPENBLAS_CORETYPE=$coretype} /usr/bin/python3 "$ROOT/bench/torch_peer.py" >"$OUT/torch.jsonl" \
    2>"$OUT/torch.log" || echo "[bench] PyTorch peer failed; see $OUT/torch.log" >&2
fi

grep -h "gemm:" "$OUT"/bench_gemm.log >&2 || true
python3 "$ROOT/bench/report.py" "$OUT"

# KV cache bytes per token of the deepseek configs, MLA against MHA (one JSON line each).
[ -n "${KEEL_BENCH_NO_BUILD:-}" ] || cmake --build "$BUILD" --target bench_mla_cache -j "${JOBS:-2}" >&2
(cd "$ROOT" && "$BUILD/bench_mla_cache" configs/deepseek-tiny.toml configs/deepseek-small.toml) ||
  echo "[bench] bench_mla_cache failed" >&2
