#include "train/run_setup.h"

#include <filesystem>

#include "core/error.h"

namespace keel::train {

data::PrepareResult prepare_run_data(const io::Config& cfg) {
  const auto& d = cfg.data;
  if (!std::filesystem::exists(d.corpus))
    fail<IoError>("data.corpus: {}: no such file or directory", d.corpus);
  data::PrepareOptions opt;
  opt.inputs = {d.corpus};
  if (d.tokenizer == "gpt2") {
    opt.tokenizer = data::TokenizerSource::Gpt2;
    opt.gpt2_dir = d.gpt2_dir;
  } else {
    opt.tokenizer = data::TokenizerSource::Train;
    opt.vocab_size = int32_t(d.vocab_size);
  }
  opt.val_fraction = d.val_fraction;
  opt.seed = d.split_seed;
  return data::prepare_corpus_cached(opt, d.cache_dir);
}

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

TrainerOptions run_trainer_options(const io::Config& cfg, double peak_flops) {
  const auto& t = cfg.train;
  TrainerOptions o;
  o.batch_size = t.batch_size;
  o.seq_len = t.seq_len;
  o.grad_accum = t.grad_accum;
  o.steps = t.steps;
  o.schedule = LrSchedule{t.lr, t.min_lr, t.warmup_steps, t.steps};
  o.adamw = AdamWConfig{t.beta1, t.beta2, t.eps, t.weight_decay};
  // Every step under compress_update is a rank's own AdamW step on a delayed
  // exchange (io/config.h).
  if (cfg.dist.compress_update && cfg.dist.update_beta1 > 0) o.adamw.beta1 = cfg.dist.update_beta1;
  o.grad_clip = t.grad_clip;
  o.eval_every = t.eval_every;
  o.peak_flops = t.peak_gflops > 0 ? t.peak_gflops * 1e9 : peak_flops;
  return o;
}

data::BatchSampler make_train_sampler(const io::Config& cfg, const data::PrepareResult& prep) {
  return data::BatchSampler(data::TokenShard::open(prep.train_path), cfg.train.batch_size,
                            cfg.train.seq_len, cfg.train.seed);
}

std::optional<data::EvalSampler> make_val_sampler(const io::Config& cfg,
                                                  const data::PrepareResult& prep) {
  if (prep.val_tokens <= cfg.train.seq_len) return std::nullopt;
  auto shard = data::TokenShard::open(prep.val_path);
  // A small validation split gets as many full batches as it holds, at least one row each.
  const int64_t windows = (shard.size() - 1) / cfg.train.seq_len;
  const int64_t b = std::min<int64_t>(cfg.train.batch_size, windows);
  if (b < 1) return std::nullopt;
  return data::EvalSampler(std::move(shard), b, cfg.train.seq_len, cfg.train.eval_batches);
}

}  // namespace keel::train
