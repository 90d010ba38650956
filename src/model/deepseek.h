// What the deepseek architecture exposes beyond Model: its routing decisions
// (for tests and tools) and the cache sizes of its attention (for benches).
#pragma once
#include <cstdint>
#include <vector>

#include "model/model.h"

namespace keel::model {

// The top-k expert ids i32 (N, K) of every MoE layer from the model's last
// forward, in layer order (copies). Throws keel::Error if m is not deepseek.
std::vector<Tensor> deepseek_last_routing(Model& m);
// Bytes's KV cache per token at
// `bytes_per_elem`: MLA caches the latent plus the rotary key (kv_lora_rank +
// qk_rope_head_dim per layer); standard multi-head attention over the same
// width caches k and v of every head (2 * n_embd per layer). cfg resolved.
int64_t mla_cache_bytes_per_token(const ModelConfig& cfg, int64_t bytes_per_elem);
int64_t mha_cache_bytes_per_token(const ModelConfig& cfg, int64_t bytes_per_elem);

}  // namespace keel::model
