#include "store/run_model.h"

#include "core/error.h"

namespace keel::store {

std::unique_ptr<backend::Backend> make_run_backend(const io::Config& cfg) {
  auto be = backend::make_backend(cfg.train.backend);
  if (cfg.train.threads > 0) be->set_threads(int(cfg.train.threads));
  return be;
}

model::ModelConfig run_model_config(const io::Config& cfg, int64_t tokenizer_vocab) {
  const auto& s = cfg.model;
  model::ModelConfig m;
  m.arch = s.arch;
  m.vocab_size = s.vocab_size > 0 ? s.vocab_size : tokenizer_vocab;
  if (m.vocab_size < tokenizer_vocab)
    fail<ConfigError>("{}: model.vocab_size: {} is smaller than the tokenizer's vocabulary ({})",
                      io::config_origin(cfg, "model.vocab_size"), m.vocab_size, tokenizer_vocab);
  m.n_layer = s.n_layer;
  m.n_head = s.n_head;
  m.n_kv_head = s.n_kv_head;
  m.n_embd = s.n_embd;
  m.ffn_hidden = s.ffn_hidden;
  m.max_seq_len = s.max_seq_len > 0 ? s.max_seq_len : cfg.train.seq_len;
  m.rope_theta = float(s.rope_theta);
  m.norm_eps = float(s.norm_eps);
  m.init_std = float(s.init_std);
  m.compute_dtype = s.compute_dtype;
  m.recompute = s.recompute;
  m.q_lora_rank = s.q_lora_rank;
  m.kv_lora_rank = s.kv_lora_rank;
  m.qk_nope_head_dim = s.qk_nope_head_dim;
  m.qk_rope_head_dim = s.qk_rope_head_dim;
  m.v_head_dim = s.v_head_dim;
  m.n_routed_experts = s.n_routed_experts;
  m.n_shared_experts = s.n_shared_experts;
  m.top_k = s.top_k;
  m.moe_ffn_hidden = s.moe_ffn_hidden;
  m.n_dense_layers = s.n_dense_layers;
  m.gating = s.gating;
  m.norm_topk_prob = s.norm_topk_prob;
  m.routed_scaling = float(s.routed_scaling);
  m.bias_update_rate = float(s.bias_update_rate);
  m.aux_loss_alpha = float(s.aux_loss_alpha);
  m.capacity_factor = float(s.capacity_factor);
  m.router_noise = float(s.router_noise);
  return m;
}

}  // namespace keel::store
