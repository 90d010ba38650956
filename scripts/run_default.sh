#!/usr/bin/env bash
# The default run: train configs/tiny.toml (the embedded default) on the
# bundled corpus, then sample a continuation of a fixed prompt from it.
set -euo pipefail
cd "$(dirname "$0")/.."
KEEL="${1:-build/keel}"
start=$(date +%s)
"$KEEL" train --config configs/tiny.toml
echo "--- sample (keel generate --run runs/tiny) ---"
"$KEEL" generate --run runs/tiny --prompt "The state of the Union is" --max-tokens 100 \
  --temperature 0.7 --top-k 40 --seed 1
echo "[run] train + generate took $(( $(date +%s) - start )) s"
