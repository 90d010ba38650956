// AdamW over a model's parameters: f32 master weights and f32 moments, the
// update itself run by the backend's adamw_update kernel, decoupled weight
// decay only on parameters marked decay. Also the global gradient norm used
// for clipping. The moments and the step count are the optimizer's whole state.
#pragma once
#include <cstdint>
#include <vector>

#include "backend/backend.h"
#include "core/tensor.h"
#include "nn/parameter.h"

namespace keel::train {

struct AdamWConfig {
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.0;
};

class AdamW {
 public:
  // Allocates zero moments shaped like each parameter (params must outlive this).
  AdamW(backend::Backend& be, std::vector<nn::Parameter*> params, AdamWConfig cfg);

  // One update of every parameter at rate lr; each gradient is multiplied by
  // grad_scale first (clipping). Bias correction uses t() + 1, then t() advances.
  // bf16 compute copies are written in the same pass over the weights (saving
  // Model::sync_compute_weights' separate read and write of every weight);
  // wrote_compute_copies() says whether the last step did so for all of them.
  // variance_keep < 1 (backend::AdamWArgs): the gradient is one rank's share
  // of a larger batch and is normalised like that batch's mean would be.
  void step(double lr, float grad_scale, float variance_keep = 1.f);

  // Whether the last step() also wrote every parameter's bf16 compute copy.
  bool wrote_compute_copies() const { return wrote_compute_copies_; }

  // The SDC seal of the moments (src/resilience/sdc_check.h), taken inside
  // the update where the backend can (Backend::digests_moments): after a
  // step() with digest_moments(true), moment_digests_valid() says whether it
  // did, and the two values equal moments_hash of this optimizer's moments as
  // the update read them and as it left them.
  void digest_moments(bool on) { digest_moments_ = on; }
  bool moment_digests_valid() const { return digests_valid_; }
  uint64_t moments_digest_before() const { return digest_before_; }
  uint64_t moments_digest_after() const { return digest_after_; }

  // Optimizer steps taken so far.
  int64_t t() const { return t_; }
  void set_t(int64_t t) { t_ = t; }
  const AdamWConfig& config() const { return cfg_; }
  // First and second moments, in parameter order (same shapes, f32). Mutable
  // so that a checkpoint can restore them in place.
  std::vector<Tensor>& m() { return m_; }
  std::vector<Tensor>& v() { return v_; }
  const std::vector<Tensor>& m() const { return m_; }
  const std::vector<Tensor>& v() const { return v_; }
  const std::vector<nn::Parameter*>& params() const { return params_; }

  // ---- ZeRO-1 sharding (src/dist/data_parallel.h)
  // From now on step() updates only parameters [begin, end) (same arithmetic
  // per parameter, so a shard's results equal the full update bit for bit),
  // and the moments of every other parameter are released: m()[i], v()[i]
  // are undefined tensors for them. (0, params().size()) is the full update.
  void set_shard(size_t begin, size_t end);
  size_t shard_begin() const { return shard_begin_; }
  size_t shard_end() const { return shard_end_; }
  bool sharded() const { return shard_begin_ != 0 || shard_end_ != params_.size(); }
  // Zero moments for every released parameter, so that a full state can be
  // gathered or restored in place (a checkpoint load into a sharded optimizer
  // must call this first). release_unowned_moments() frees them again.
  void materialize_moments();
  void release_unowned_moments();
  // Bytes held by the moments now (both m and v).
  size_t moment_bytes() const;

  // The backend whose memory holds the moments.
  backend::Backend& backend() const { return be_; }

 private:
  backend::Backend& be_;
  std::vector<nn::Parameter*> params_;
  AdamWConfig cfg_;
  std::vector<Tensor> m_, v_;
  int64_t t_ = 0;
  size_t shard_begin_ = 0, shard_end_ = 0;  // parameters step() updates
  bool wrote_compute_copies_ = false;
  bool digest_moments_ = false, digests_valid_ = false;
  uint64_t digest_before_ = 0, digest_after_ = 0;
};

// sqrt of the sum over parameters of sum(grad^2), accumulated in f64 in
// parameter order (deterministic).
double grad_global_norm(backend::Backend& be, const std::vector<nn::Parameter*>& params);

// Sets every gradient to zero.
void zero_grads(backend::Backend& be, const std::vector<nn::Parameter*>& params);

}  // namespace keel::train
