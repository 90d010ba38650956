// DeepSeek configuration defaults and checks: each bad value is a ConfigError
// naming the model key, before any parameter is allocated.
#include "core/error.h"
#include "model/model_factories.h"

namespace keel::model {

void resolve_deepseek(ModelConfig& c) {
  const int64_t HS = c.n_embd / c.n_head;
  if (c.n_routed_experts <= 0)
    fail<ConfigError>("model.n_routed_experts must be > 0 for deepseek, got {}",
                      c.n_routed_experts);
  if (c.top_k < 1 || c.top_k > c.n_routed_experts)
    fail<ConfigError>("model.top_k must be in [1, model.n_routed_experts = {}], got {}",
                      c.n_routed_experts, c.top_k);
  if (c.n_shared_experts < 0)
    fail<ConfigError>("model.n_shared_experts must be >= 0, got {}", c.n_shared_experts);
  if (c.kv_lora_rank < 1 || c.kv_lora_rank > c.n_embd)
    fail<ConfigError>("model.kv_lora_rank must be in [1, model.n_embd = {}], got {}", c.n_embd,
                      c.kv_lora_rank);
  if (c.q_lora_rank < 0 || c.q_lora_rank > c.n_embd)
    fail<ConfigError>(
        "model.q_lora_rank must be in [0, model.n_embd = {}] (0: no q compression), "
        "got {}",
        c.n_embd, c.q_lora_rank);
  if (c.qk_nope_head_dim == 0) c.qk_nope_head_dim = HS;
  if (c.qk_rope_head_dim == 0) c.qk_rope_head_dim = c.qk_nope_head_dim / 2;
  if (c.v_head_dim == 0) c.v_head_dim = c.qk_nope_head_dim;
  if (c.qk_nope_head_dim < 0)
    fail<ConfigError>("model.qk_nope_head_dim must be >= 0, got {}", c.qk_nope_head_dim);
  if (c.qk_rope_head_dim <= 0 || c.qk_rope_head_dim % 2 != 0)
    fail<ConfigError>("model.qk_rope_head_dim must be even and > 0, got {}", c.qk_rope_head_dim);
  if (c.v_head_dim <= 0 || c.v_head_dim > c.qk_nope_head_dim + c.qk_rope_head_dim)
    fail<ConfigError>(
        "model.v_head_dim must be in [1, qk_nope_head_dim + qk_rope_head_dim = {}], got {}",
        c.qk_nope_head_dim + c.qk_rope_head_dim, c.v_head_dim);
  if (c.n_dense_layers < 0 || c.n_dense_layers > c.n_layer)
    fail<ConfigError>("model.n_dense_layers must be in [0, model.n_layer = {}], got {}", c.n_layer,
                      c.n_dense_layers);
  if (c.moe_ffn_hidden == 0) c.moe_ffn_hidden = c.ffn_hidden / (c.top_k + c.n_shared_experts);
  if (c.moe_ffn_hidden <= 0)
    fail<ConfigError>("model.moe_ffn_hidden must be > 0, got {}", c.moe_ffn_hidden);
  if (c.gating != "sigmoid" && c.gating != "softmax")
    fail<ConfigError>("model.gating must be 'sigmoid' or 'softmax', got '{}'", c.gating);
  if (!(c.routed_scaling > 0.f))
    fail<ConfigError>("model.routed_scaling must be > 0, got {}", c.routed_scaling);
  if (!(c.bias_update_rate >= 0.f))
    fail<ConfigError>("model.bias_update_rate must be >= 0, got {}", c.bias_update_rate);
  if (!(c.aux_loss_alpha >= 0.f))
    fail<ConfigError>("model.aux_loss_alpha must be >= 0, got {}", c.aux_loss_alpha);
  if (!(c.capacity_factor >= 0.f))
    fail<ConfigError>("model.capacity_factor must be >= 0 (0: no capacity limit), got {}",
                      c.capacity_factor);
}

}  // namespace keel::model
