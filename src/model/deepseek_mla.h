// Multi-head latent attention (DeepSeek-V2/V3): keys and values are rebuilt
// per head from one small shared latent (kv_lora_rank) plus one rotary key
// vector shared by every head; queries optionally through their own latent.
// Only the latent and the rotary key need caching at inference.
#pragma once
#include <cstdint>
#include <string>

#include "model/model.h"
#include "nn/modules.h"

namespace keel::model {

struct MlaAttention {
  nn::Linear q_proj;              // when q_lora_rank == 0
  nn::Linear q_a_proj, q_b_proj;  // when q_lora_rank > 0
  nn::RMSNorm q_a_layernorm;
  nn::Linear kv_a_proj_with_mqa;  // C -> kv_lora_rank + qk_rope_head_dim
  nn::RMSNorm kv_a_layernorm;     // over the latent
  nn::Linear kv_b_proj;           // latent -> n_head * (qk_nope + v)
  nn::Linear o_proj;              // n_head * v -> C
  int64_t n_head = 0, q_lora = 0, kv_lora = 0, nope = 0, rope = 0, v = 0;
  float rope_theta = 10000.f;

  MlaAttention() = default;
  MlaAttention(nn::ParamStore& ps, const std::string& prefix, const ModelConfig& c, float std,
               float out_std);
  nn::Value forward(nn::Tape& tape, const nn::Value& x) const;  // (B, T, C) -> (B, T, C)
  // Elements cached per token per layer: the latent plus the rotary key.
  int64_t cache_elems_per_token() const { return kv_lora + rope; }
};

}  // namespace keel::model
