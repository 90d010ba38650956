#!/bin/sh
# deepseek-tiny against a dense llama with the same active parameters per
# token, at the same token budget (same data, batch, steps, schedule, seed).
# Active matmul parameters outside the embedding and LM head, deepseek-tiny:
#   4 MLA layers (q 24576 + kv_a 6144 + kv_b 8192 + o 16384 = 55296 each)
#   + 1 dense SwiGLU (3 * 128 * 384 = 147456)
#   + 3 MoE layers (router 1024 + (top-2 + 1 shared) * 3 * 128 * 96 = 111616 each)
#   = 703488.
# llama, 4 layers of 4 * 128^2 = 65536 attention + 3 * 128 * F SwiGLU: F = 288
#   gives 704512 (0.15% more).
# Prints one JSON line with both final validation losses and the deepseek
# run's expert load max/mean over the steps after warmup.
# Usage (from the repository root, keel built): bench/deepseek_vs_llama.sh [keel] [steps]
set -e
KEEL=${1:-build/keel}
STEPS=${2:-300}
OUT=${OUT:-runs}
"$KEEL" train --config configs/deepseek-tiny.toml train.steps="$STEPS" run.dir="$OUT/deepseek-tiny"
"$KEEL" train --config configs/deepseek-tiny.toml model.arch=llama model.ffn_hidden=288 \
  train.steps="$STEPS" run.dir="$OUT/llama-dense-match"
/usr/bin/python3 - "$OUT/deepseek-tiny/metrics.jsonl" "$OUT/llama-dense-match/metrics.jsonl" <<'PY'
import json, sys
def lines(p):
    return [json.loads(l) for l in open(p) if l.strip()]
ds, ll = lines(sys.argv[1]), lines(sys.argv[2])
warm = 40  # configs/deepseek-tiny.toml train.warmup_steps
after = [m["expert_load_max_mean"] for m in ds if m["step"] > warm]
worst = [m["expert_load_max_mean_worst"] for m in ds if m["step"] > warm]
val = lambda ms: [m["val_loss"] for m in ms if "val_loss" in m][-1]
print(json.dumps({
    "bench": "deepseek_vs_llama", "steps": ds[-1]["step"],
    "tokens": ds[-1]["step"] * 16 * 128,
    "deepseek_val_loss": val(ds), "llama_val_loss": val(ll),
    "ratio": val(ds) / val(ll),
    "load_max_mean_after_warmup_mean": sum(after) / len(after),
    "load_max_mean_after_warmup_max": max(after),
    "load_max_mean_worst_layer_after_warmup_max": max(worst),
    "load_max_mean_last": ds[-1]["expert_load_max_mean"],
    "routing_entropy_last": ds[-1]["routing_entropy"]}))
PY
