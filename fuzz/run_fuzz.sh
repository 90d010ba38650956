#!/usr/bin/env bash
# Builds the libFuzzer targets for keel's file readers (GGUF, safetensors) with
# clang++ -fsanitize=fuzzer,address,undefined from just the sources they need,
# then runs each for a bounded time. Exit status is non-zero when a target
# crashes, leaks, trips a sanitizer or cannot be built; the crashing input is
# kept in the work directory.
# Usage: fuzz/run_fuzz.sh [seconds per target (default 20)] [work dir (default build-fuzz)]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET="${1:-20}"
WORK="${2:-build-fuzz}"
CXX="${KEEL_FUZZ_CXX:-clang++}"
command -v "$CXX" >/dev/null || { echo "fuzz: $CXX not found (scripts/setup.sh installs clang)"; exit 1; }
mkdir -p "$WORK"

SRCS=(src/core/dtype.cpp src/core/shape.cpp src/core/tensor.cpp src/core/arena.cpp
      src/io/atomic_file.cpp src/io/safetensors.cpp src/io/gguf_writer.cpp src/io/gguf_reader.cpp
      src/io/gguf_kquants.cpp)
FLAGS=(-std=c++20 -O1 -g -Isrc -fno-omit-frame-pointer -DFMT_SHARED)
SAN=(-fsanitize=address,undefined -fno-sanitize-recover=undefined)
LIBS=(-lfmt)

# One object per source, instrumented for coverage, shared by the targets.
objs=()
for s in "${SRCS[@]}"; do
  o="$WORK/$(basename "${s%.cpp}").o"
  if [ ! -f "$o" ] || [ "$s" -nt "$o" ]; then
    "$CXX" "${FLAGS[@]}" "${SAN[@]}" -fsanitize=fuzzer-no-link -c "$s" -o "$o"
  fi
  objs+=("$o")
done
"$CXX" "${FLAGS[@]}" "${SAN[@]}" fuzz/make_seeds.cpp "${objs[@]}" "${LIBS[@]}" -o "$WORK/make_seeds"
mkdir -p "$WORK/seeds_gguf" "$WORK/seeds_safetensors"
"$WORK/make_seeds" "$WORK/seeds_gguf" "$WORK/seeds_safetensors"

status=0
for target in gguf safetensors; do
  bin="$WORK/fuzz_$target"
  "$CXX" "${FLAGS[@]}" "${SAN[@]}" -fsanitize=fuzzer "fuzz/fuzz_$target.cpp" "${objs[@]}" \
    "${LIBS[@]}" -o "$bin"
  mkdir -p "$WORK/corpus_$target"
  echo "[fuzz] $target: ${SECONDS_PER_TARGET}s"
  if ! ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
      "$bin" -max_total_time="$SECONDS_PER_TARGET" -max_len=8192 -rss_limit_mb=2048 \
      -timeout=10 -print_final_stats=1 -artifact_prefix="$WORK/crash_${target}_" \
      "$WORK/corpus_$target" "$WORK/seeds_$target" 2>"$WORK/fuzz_$target.log"; then
    echo "[fuzz] $target FAILED; see $WORK/fuzz_$target.log and $WORK/crash_${target}_*"
    tail -n 40 "$WORK/fuzz_$target.log"
    status=1
  else
    grep -E "stat::number_of_executed_units|stat::new_units_added" "$WORK/fuzz_$target.log" |
      sed "s/^/[fuzz] $target /"
  fi
done
[ "$status" -eq 0 ] && echo "[fuzz] no crash"
exit "$status"
