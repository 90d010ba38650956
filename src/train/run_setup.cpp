#include "train/run_setup.h"

#include "core/error.h"

namespace keel::train {

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
