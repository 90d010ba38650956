#!/usr/bin/env bash
# Builds the libFuzzer targets for keel's parsers (GGUF, safetensors, OpenAI
# request JSON, tokenizer files, TOML config and checkpoint manifest, chat
# template, Hugging Face config.json and tokenizer.json) with clang++ -fsanitize=fuzzer,address,undefined from just the
# sources they need, replays every saved crash input under
# fuzz/regressions/<target>/ (each once fixed bug stays fixed), then fuzzes
# each target for a bounded time from fuzz/seeds/<target>/ (plus generated
# seeds). Exit status is non-zero when a target crashes, leaks, trips a
# sanitizer or cannot be built; the crashing input is kept in the work
# directory: copy it to fuzz/regressions/<target>/ with the fix.
# Usage: fuzz/run_fuzz.sh [seconds per target (default 20)] [work dir (default build-fuzz)]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET="${1:-20}"
WORK="${2:-build-fuzz}"
CXX="${KEEL_FUZZ_CXX:-clang++}"
command -v "$CXX" >/dev/null || { echo "fuzz: $CXX not found (scripts/setup.sh installs clang)"; exit 1; }
mkdir -p "$WORK"

SRCS=(src/core/dtype.cpp src/core/shape.cpp src/core/tensor.cpp src/core/arena.cpp src/core/host_memory.cpp
      src/io/atomic_file.cpp src/io/file_bytes.cpp src/io/safetensors.cpp src/io/gguf_writer.cpp
      src/io/gguf_reader.cpp
      src/io/config.cpp src/io/config_schema.cpp src/resilience/checkpoint_manifest.cpp
      src/data/tokenizer.cpp src/data/tokenizer_io.cpp src/data/pretokenizer.cpp
      src/data/byte_unicode.cpp src/data/file_util.cpp
      src/serve/openai_request.cpp src/serve/openai_error.cpp src/serve/chat_template.cpp
      src/serve/json_schema.cpp src/serve/json_grammar.cpp
      src/store/hf_config.cpp src/io/gguf_kquants.cpp)
TARGETS=(gguf safetensors http_request tokenizer config chat_template hf_files)
FLAGS=(-std=c++20 -O1 -g -Isrc -fno-omit-frame-pointer -DFMT_SHARED -DTOML_HEADER_ONLY=0
       -DTOML_SHARED_LIB=1)
SAN=(-fsanitize=address,undefined -fno-sanitize-recover=undefined)
LIBS=(-lfmt -ltomlplusplus)

# One object per source, instrumented for coverage, shared by the targets.
objs=()
for s in "${SRCS[@]}"; do
  o="$WORK/$(basename "${s%.cpp}").o"
  # Headers count too: a struct that grew (a config field) must not meet
  # objects compiled against its old layout.
  if [ ! -f "$o" ] || [ "$s" -nt "$o" ] || [ -n "$(find src -name '*.h' -newer "$o" -print -quit)" ]; then
    "$CXX" "${FLAGS[@]}" "${SAN[@]}" -fsanitize=fuzzer-no-link -c "$s" -o "$o"
  fi
  objs+=("$o")
done
"$CXX" "${FLAGS[@]}" "${SAN[@]}" fuzz/make_seeds.cpp "${objs[@]}" "${LIBS[@]}" -o "$WORK/make_seeds"
mkdir -p "$WORK/seeds_gguf" "$WORK/seeds_safetensors"
"$WORK/make_seeds" "$WORK/seeds_gguf" "$WORK/seeds_safetensors"

status=0
for target in "${TARGETS[@]}"; do
  bin="$WORK/fuzz_$target"
  "$CXX" "${FLAGS[@]}" "${SAN[@]}" -fsanitize=fuzzer "fuzz/fuzz_$target.cpp" "${objs[@]}" \
    "${LIBS[@]}" -o "$bin"
  mkdir -p "$WORK/corpus_$target" "$WORK/seeds_$target"
  [ -d "fuzz/seeds/$target" ] && cp fuzz/seeds/"$target"/* "$WORK/seeds_$target/"
  # Saved crash inputs first: given files, libFuzzer runs each once.
  regressions=(fuzz/regressions/"$target"/*)
  if [ -e "${regressions[0]}" ]; then
    echo "[fuzz] $target: replaying ${#regressions[@]} saved crash input(s)"
    if ! ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 "$bin" "${regressions[@]}" \
        >"$WORK/regress_$target.log" 2>&1; then
      echo "[fuzz] $target FAILED on a saved crash input; see $WORK/regress_$target.log"
      tail -n 40 "$WORK/regress_$target.log"
      status=1
      continue
    fi
  fi
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
