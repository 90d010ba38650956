// DiLoCo over a Communicator: every rank takes `inner_steps` local AdamW
// steps on its own data with no gradient exchange, then the ranks average
// their pseudo-gradients (round-start parameters minus their own, optionally
// compressed with error feedback) and apply one outer Nesterov step to the
// round-start parameters, which every rank then adopts. Communication drops
// from every step to once per round.
//
// Determinism: the pseudo-gradient sum is a fixed-order sum (or the codec's
// rank-ordered decode), the outer step is element-wise and identical on every
// rank, so all ranks hold the same bits after each outer step, and a run
// resumed from a checkpoint (taken only at outer steps, when replicas agree)
// continues bit-identically: the checkpoint holds the outer momentum and
// every rank's inner AdamW moments and residual.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "dist/communicator.h"
#include "dist/compressed_sum.h"
#include "dist/flat_params.h"
#include "dist/grad_codec.h"
#include "model/model.h"
#include "train/adamw.h"
#include "train/diloco_outer.h"
#include "train/replica_sync.h"

namespace keel::dist {

struct DilocoOptions {
  int64_t inner_steps = 32;  // H
  train::OuterConfig outer;
  GradCodecConfig codec;    // for the pseudo-gradient; None: exact f32 sum
  int64_t total_steps = 0;  // the run's last step also ends a round
  // The first warmup_steps steps average gradients every step (through
  // `codec` when set, with its own residual) like plain data parallelism;
  // local rounds start after them. Early training moves fast and the
  // replicas' local models would diverge most there.
  int64_t warmup_steps = 0;
  // AdamWArgs::variance_keep of the local steps (warm-up steps average
  // gradients and use 1).
  float variance_keep = 1.f;
};

// What the last step's communication did.
struct DilocoStats {
  uint64_t bytes_sent = 0;
  bool outer_step = false;  // this step ended a round
  double outer_s = 0;       // seconds of the outer step (exchange included)
};

class DilocoSync final : public train::ReplicaSync {
 public:
  // comm, model and inner (the trainer's optimizer, over model.parameters())
  // must outlive this.
  DilocoSync(Communicator& comm, model::Model& model, train::AdamW& inner, DilocoOptions opt);

  void begin_step(int64_t step) override;
  // Local steps: the gradients stay this rank's own.
  void finish_gradients(const std::vector<nn::Parameter*>& params) override;
  double mean(double x) override;
  void optimizer_step(train::AdamW& opt, double lr, float grad_scale) override;
  void sum_state(std::span<float> x) override;
  // Ends a round every inner_steps steps and at the last step.
  bool end_step() override;
  bool replicas_identical() const override { return synced_; }
  uint64_t step_bytes_sent() const override { return stats_.bytes_sent; }
  // Gathers every rank's inner moments, AdamW step count and residual.
  void gather_optimizer_state(train::AdamW& opt) override;
  void save_state(nlohmann::json& j, std::vector<io::NamedTensor>& tensors) override;
  void load_state(const nlohmann::json& j, const io::SafetensorsFile* f) override;

  const DilocoStats& last_step_stats() const { return stats_; }

 private:
  void outer_step();
  bool warming(int64_t step) const { return step < opt_.warmup_steps; }
  void average_gradients();
  // mean_delta_ := the sum over ranks of delta_, through `codec` (its
  // residual) or a lossless allreduce when null; counts the bytes sent.
  void sum_deltas(CompressedSum* codec, const char* what);

  Communicator& comm_;
  train::AdamW& inner_;
  DilocoOptions opt_;
  std::vector<nn::Parameter*> params_;
  FlatStage stage_;  // parameters, gradients and moments to and from the host
  int64_t n_ = 0;
  int64_t step_ = 0;
  bool synced_ = true;     // replicas hold the same parameters
  bool anchored_ = false;  // anchor_ holds the round's start
  std::vector<float> anchor_, delta_, mean_delta_;
  train::OuterOptimizer outer_;
  std::unique_ptr<CompressedSum> compressed_;
  std::unique_ptr<CompressedSum> grad_compressed_;  // warm-up gradients, with a codec
  DilocoStats stats_;
  // Gathered for the next save: every rank's moments, step count, residual.
  std::vector<std::vector<float>> saved_m_, saved_v_, saved_residual_, saved_grad_residual_;
  std::vector<int64_t> saved_t_;
};

}  // namespace keel::dist
