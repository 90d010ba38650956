// Deterministic batches from a token shard. Training rows start at offsets
// drawn from the counter-based RNG keyed by (seed, step, stream), so the data
// order is a pure function of the step number: resuming needs only the step.
#pragma once
#include <cstdint>

#include "core/tensor.h"
#include "data/token_shard.h"

namespace keel::data {

// Inputs and targets of one batch, both i32 (B, T); targets[b][t] is the
// token after inputs[b][t].
struct Batch {
  Tensor inputs;   // (B, T) i32
  Tensor targets;  // (B, T) i32
};

// Random windows for training. Row i (0 <= i < B) of the batch for (step,
// stream) reads the T + 1 tokens starting at
//   offset(step, stream, i) = Rng(seed, stream).below(step * B + i, n - T)
// where n = shard.size(): inputs = tokens [o, o + T), targets = [o + 1, o + T + 1).
// `stream` names the slice of the global batch: use the data-parallel rank, or
// better the global micro-batch index (rank * accum_steps + micro) so that a
// restart with fewer ranks and more accumulation reads the same rows.
class BatchSampler {
 public:
  // Throws keel::Error if the shard has fewer than T + 1 tokens or B, T < 1.
  BatchSampler(TokenShard shard, int64_t batch_size, int64_t seq_len, uint64_t seed);

  int64_t batch_size() const { return B_; }
  int64_t seq_len() const { return T_; }
  uint64_t seed() const { return seed_; }
  const TokenShard& shard() const { return shard_; }

  int64_t offset(uint64_t step, uint64_t stream, int64_t row) const;
  // New tensors holding the batch for (step, stream).
  Batch batch(uint64_t step, uint64_t stream = 0) const;
  // Fills caller tensors (i32, contiguous, shape (B, T); throws keel::Error otherwise).
  void fill(uint64_t step, uint64_t stream, Tensor& inputs, Tensor& targets) const;

 private:
  TokenShard shard_;
  int64_t B_, T_;
  uint64_t seed_;
};

// Fixed evaluation batches over a (validation) shard: consecutive,
// non-overlapping windows; window w starts at w * T, batch k holds windows
// k*B .. k*B + B - 1. Same batches every time, independent of any seed.
class EvalSampler {
 public:
  // max_batches = 0: every full batch. Throws keel::Error if the shard holds
  // fewer than B windows of T + 1 tokens.
  EvalSampler(TokenShard shard, int64_t batch_size, int64_t seq_len, int64_t max_batches = 0);

  int64_t num_batches() const { return num_batches_; }
  int64_t batch_size() const { return B_; }
  int64_t seq_len() const { return T_; }
  Batch batch(int64_t index) const;
  void fill(int64_t index, Tensor& inputs, Tensor& targets) const;

 private:
  TokenShard shard_;
  int64_t B_, T_, num_batches_;
};

}  // namespace keel::data
