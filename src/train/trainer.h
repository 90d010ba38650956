// Trainer: the state of a training run and the step that advances it. The
// state is the model's parameters, the optimizer (moments, t), and the step
// counter, which is also the data cursor (batches are a pure function of the
// step) and the LR schedule position; a checkpoint that saves and restores
// these resumes the same trajectory bit for bit.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "backend/backend.h"
#include "data/batch_sampler.h"
#include "model/model.h"
#include "train/adamw.h"
#include "train/lr_schedule.h"
#include "train/metrics.h"
#include "train/replica_sync.h"

namespace keel::train {

struct TrainerOptions {
  int64_t batch_size = 1;  // sequences per micro-batch
  int64_t seq_len = 1;
  int64_t grad_accum = 1;  // micro-batches per optimizer step on this replica
  int64_t steps = 1;
  LrSchedule schedule;
  AdamWConfig adamw;
  double grad_clip = 0;    // 0: off
  int64_t eval_every = 0;  // 0: evaluate only when asked
  double peak_flops = 0;   // FLOP/s for MFU; 0: mfu reported as 0
  // Data-parallel slice: micro-batch m of this replica at step s reads global
  // micro-batch index s * (world * accum) + rank * accum + m, so the rows of
  // a step depend only on the global batch, not on how it is split.
  int64_t data_world = 1, data_rank = 0;
};

class Trainer {
 public:
  // model, backend and the samplers' shards must outlive the trainer. The
  // train sampler's batch size and sequence length must equal the options'.
  Trainer(model::Model& model, backend::Backend& be, data::BatchSampler train,
          std::optional<data::EvalSampler> val, TrainerOptions opt);

  // One optimizer step: zero grads, accum micro-batches of forward/backward
  // with grad_scale 1/accum, global-norm clipping, AdamW, compute-weight
  // refresh; evaluates when eval_every divides the new step count or it is
  // the last step. A non-finite loss or gradient norm skips the update (the
  // step still counts, so the data order is unchanged).
  StepMetrics step();
  // Mean loss over the fixed validation batches (throws if there are none).
  // With a replica sync whose replicas agree, a collective: each replica
  // evaluates every data_world-th batch and all get the same mean.
  double evaluate();
  bool done() const { return step_ >= opt_.steps; }
  bool has_validation() const { return val_.has_value() && val_->num_batches() > 0; }

  // ---- state
  // Optimizer steps taken (== the next step's 0-based index and the data cursor).
  int64_t step_count() const { return step_; }
  void set_step_count(int64_t s) { step_ = s; }
  AdamW& optimizer() { return opt_state_; }
  model::Model& model() { return model_; }
  const TrainerOptions& options() const { return opt_; }
  std::optional<double> last_val_loss() const { return last_val_; }
  int64_t tokens_per_step() const;
  // Global micro-batch index read by micro-batch m of step s (see TrainerOptions).
  uint64_t micro_batch_index(int64_t s, int64_t m) const;
  // Data parallelism: gradients and updates go through sync (not owned; null:
  // a single replica). Set before the first step.
  void set_replica_sync(ReplicaSync* sync) { sync_ = sync; }
  // Called before the validation pass a step ends with: the pass is not the
  // step's work, so a hang detector timing steps must not count it.
  void set_before_evaluate(std::function<void()> f) { before_evaluate_ = std::move(f); }
  // Called on every replica before the step's gradients are reduced. The
  // step's loss is averaged across replicas after it, so no replica finishes
  // a step before every one has called it (the in-memory snapshots rely on
  // this to finish the copy to their buddy in time).
  void set_before_gradient_sync(std::function<void()> f) { before_gradient_sync_ = std::move(f); }

 private:
  model::Model& model_;
  backend::Backend& be_;
  data::BatchSampler train_;
  std::optional<data::EvalSampler> val_;
  TrainerOptions opt_;
  std::vector<nn::Parameter*> params_;
  AdamW opt_state_;
  int64_t step_ = 0;
  std::optional<double> last_val_;
  ReplicaSync* sync_ = nullptr;
  std::function<void()> before_evaluate_, before_gradient_sync_;
  Tensor inputs_, targets_;  // (B, T) i32, reused by every micro-batch
};

}  // namespace keel::train
