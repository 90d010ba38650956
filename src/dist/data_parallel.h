// DataParallel: the trainer's ReplicaSync over a Communicator. Gradients are
// packed into buckets whose fixed-order sums start as soon as every gradient
// in the bucket is final in the step's last backward (overlap with the rest
// of backward) and are completed in finish_gradients. With ZeRO-1 each rank
// keeps the AdamW moments of its own run of parameters only, updates those,
// and all-gathers the updated parameters.
//
// Determinism: every sum is Communicator::allreduce_sum's (chunks added in
// rank order, then all-gathered), buckets start in bucket order on every
// rank, the mean divides by the world size after the sum, and the ZeRO-1
// update of a parameter is the same adamw_update call the full optimizer
// makes. Replicas are therefore bit-identical after every step, runs are
// bit-reproducible, and ZeRO-1 gives exactly the parameters of the plain
// update. (Against one rank with gradient accumulation over the same global
// batch the results agree to rounding only: the sums are associated
// differently.)
#pragma once
#include <cstdint>
#include <memory>
#include <unordered_map>
#include <utility>
#include <vector>

#include "dist/communicator.h"
#include "dist/compressed_sum.h"
#include "dist/flat_params.h"
#include "dist/grad_codec.h"
#include "model/model.h"
#include "nn/tape.h"
#include "train/replica_sync.h"

namespace keel::model {
class CausalLM;
}

namespace keel::dist {

struct DataParallelOptions {
  bool zero1 = false;      // shard the optimizer state across ranks
  double bucket_mb = 4;    // gradient bytes per reduction bucket (MiB)
  int64_t grad_accum = 1;  // backward passes per step on this rank (the trainer's)
  bool overlap = true;     // start bucket sums during backward (needs a CausalLM)
  // Lossy gradient exchange with error feedback (grad_codec.h). With a codec
  // the whole gradient is one compressed all-gather in finish_gradients (no
  // buckets, no overlap): on a link slow enough to want it, the wire time
  // dominates and one message beats many.
  GradCodecConfig codec;
  // With a codec: what crosses the link. false: the gradient, which the
  // shared optimizer then applies. true: each rank runs AdamW on its own
  // gradient (its own moments, clipped by its own norm) and the codec carries
  // the parameter update; replicas apply the mean decoded update. Adam's
  // per-coordinate normalization then happens before the sparsification, so
  // a coordinate that top-k delivers late still moves by its full update
  // (on raw gradients a burst delivered after ~1/fraction steps moves it
  // about as much as one step's worth).
  bool compress_update = false;
  // compress_update: AdamWArgs::variance_keep of each rank's own step.
  float variance_keep = 1.f;
};

// What the last step's communication did (for metrics and tests).
struct DataParallelStats {
  int64_t buckets = 0;             // gradient buckets reduced
  int64_t buckets_overlapped = 0;  // of which started before backward ended
  double wait_s = 0;               // time finish_gradients spent waiting
  uint64_t bytes_sent = 0;         // bytes this rank sent (gradients, mean, ZeRO gathers)
};

class DataParallel final : public train::ReplicaSync, public nn::GradListener {
 public:
  // comm and model must outlive this. Registers itself as the model's
  // gradient listener when the model is a CausalLM and overlap is on.
  DataParallel(Communicator& comm, model::Model& model, DataParallelOptions opt);
  ~DataParallel() override;
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  // ---- ReplicaSync
  void begin_step(int64_t step) override;
  void finish_gradients(const std::vector<nn::Parameter*>& params) override;
  double mean(double x) override;
  void optimizer_step(train::AdamW& opt, double lr, float grad_scale) override;
  void gather_optimizer_state(train::AdamW& opt) override;
  void sum_state(std::span<float> x) override;
  uint64_t step_bytes_sent() const override { return stats_.bytes_sent; }
  // The error-feedback residual of every rank (collected in gather_optimizer_state).
  void save_state(nlohmann::json& j, std::vector<io::NamedTensor>& tensors) override;
  void load_state(const nlohmann::json& j, const io::SafetensorsFile* f) override;

  // ---- nn::GradListener (called by the tape during backward)
  void on_grad_ready(nn::Parameter& p) override;
  void on_backward_end() override;

  // Attaches the trainer's optimizer (whose per-rank moments compress_update
  // restores on load). ZeRO-1: restricts opt to this rank's shard now
  // (releasing the other moments) instead of at the first optimizer_step.
  void shard_optimizer(train::AdamW& opt);
  // Parameter index range [first, second) whose optimizer state rank r owns
  // (the whole list for every rank without zero1).
  std::pair<size_t, size_t> shard(int r) const;
  const DataParallelStats& last_step_stats() const { return stats_; }
  int64_t num_buckets() const { return int64_t(buckets_.size()); }
  Communicator& comm() { return comm_; }

 private:
  struct Bucket {
    std::vector<size_t> params;  // indices into params_
    size_t numel = 0;
    size_t remaining = 0;  // gradients not final yet in this step's last backward
    std::unique_ptr<PendingSum> sum;
    bool overlapped = false;
  };
  void launch_ready_buckets(bool all);
  void launch(Bucket& b);
  void check_params(const std::vector<nn::Parameter*>& params, const char* who) const;
  // All-gathers per-parameter tensors of the shards: each rank contributes
  // get(i) for its own parameters; every rank's get(i) is filled.
  template <class Get>
  void gather_shards(Get get, const char* what);

  Communicator& comm_;
  backend::Backend& be_;                 // where the gradients live
  std::vector<float> staged_;            // a device's reduced gradient on its way back
  FlatStage stage_;                      // whole-model vectors to and from the host
  model::CausalLM* listened_ = nullptr;  // whose tape reports gradients to us
  DataParallelOptions opt_;
  std::vector<nn::Parameter*> params_;
  std::unordered_map<const nn::Parameter*, size_t> bucket_of_;
  std::vector<Bucket> buckets_;
  size_t next_launch_ = 0;
  int64_t backwards_ = 0;
  bool in_step_ = false;
  int64_t step_ = 0;
  std::vector<size_t> bounds_;  // ZeRO-1 partition (zero_partition.h)
  DataParallelStats stats_;
  std::unique_ptr<CompressedSum> compressed_;  // with a codec
  std::vector<float> flat_, summed_, before_;  // compressed path's buffers
  // compress_update: every rank's AdamW moments, for the next save.
  std::vector<std::vector<float>> saved_m_, saved_v_;
  train::AdamW* opt_moments_ = nullptr;        // the optimizer (set by shard_optimizer)
  std::vector<std::vector<float>> residuals_;  // every rank's, for the next save
};

}  // namespace keel::dist
