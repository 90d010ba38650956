// Random training windows keyed by (seed, step, stream) and fixed eval windows.
#include "data/batch_sampler.h"

#include "core/error.h"
#include "core/rng.h"

namespace keel::data {

namespace {
void check_out(const Tensor& t, int64_t B, int64_t T, const char* name) {
  if (!t.defined() || t.dtype() != DType::I32 || t.shape() != Shape{B, T} || !t.is_contiguous())
    fail("batch sampler: {} must be a contiguous i32[{}, {}], got {}", name, B, T,
         t.defined() ? t.desc() : std::string("undefined"));
}
void fill_row(const TokenShard& s, int64_t off, int64_t T, int32_t* in, int32_t* tgt) {
  s.read(off, T, in);
  s.read(off + 1, T, tgt);
}
}  // namespace

BatchSampler::BatchSampler(TokenShard shard, int64_t batch_size, int64_t seq_len, uint64_t seed)
    : shard_(std::move(shard)), B_(batch_size), T_(seq_len), seed_(seed) {
  if (B_ < 1 || T_ < 1)
    fail("batch sampler: batch size {} and sequence length {} must be >= 1", B_, T_);
  if (shard_.size() < T_ + 1)
    fail("batch sampler: shard '{}' has {} tokens, fewer than seq_len + 1 = {}", shard_.path(),
         shard_.size(), T_ + 1);
}

int64_t BatchSampler::offset(uint64_t step, uint64_t stream, int64_t row) const {
  const Rng rng(seed_, stream);
  return int64_t(rng.below(step * uint64_t(B_) + uint64_t(row), uint64_t(shard_.size() - T_)));
}

void BatchSampler::fill(uint64_t step, uint64_t stream, Tensor& inputs, Tensor& targets) const {
  check_out(inputs, B_, T_, "inputs");
  check_out(targets, B_, T_, "targets");
  int32_t* in = inputs.data<int32_t>();
  int32_t* tg = targets.data<int32_t>();
  for (int64_t r = 0; r < B_; ++r)
    fill_row(shard_, offset(step, stream, r), T_, in + r * T_, tg + r * T_);
}

Batch BatchSampler::batch(uint64_t step, uint64_t stream) const {
  Batch b{Tensor::zeros({B_, T_}, DType::I32), Tensor::zeros({B_, T_}, DType::I32)};
  fill(step, stream, b.inputs, b.targets);
  return b;
}

EvalSampler::EvalSampler(TokenShard shard, int64_t batch_size, int64_t seq_len, int64_t max_batches)
    : shard_(std::move(shard)), B_(batch_size), T_(seq_len) {
  if (B_ < 1 || T_ < 1)
    fail("eval sampler: batch size {} and sequence length {} must be >= 1", B_, T_);
  const int64_t windows = shard_.size() >= T_ + 1 ? (shard_.size() - 1) / T_ : 0;
  num_batches_ = windows / B_;
  if (num_batches_ == 0)
    fail("eval sampler: shard '{}' has {} tokens, fewer than {} windows of {} + 1 tokens",
         shard_.path(), shard_.size(), B_, T_);
  if (max_batches > 0 && max_batches < num_batches_) num_batches_ = max_batches;
}

void EvalSampler::fill(int64_t index, Tensor& inputs, Tensor& targets) const {
  if (index < 0 || index >= num_batches_)
    fail("eval sampler: batch {} outside [0, {})", index, num_batches_);
  check_out(inputs, B_, T_, "inputs");
  check_out(targets, B_, T_, "targets");
  int32_t* in = inputs.data<int32_t>();
  int32_t* tg = targets.data<int32_t>();
  for (int64_t r = 0; r < B_; ++r)
    fill_row(shard_, (index * B_ + r) * T_, T_, in + r * T_, tg + r * T_);
}

Batch EvalSampler::batch(int64_t index) const {
  Batch b{Tensor::zeros({B_, T_}, DType::I32), Tensor::zeros({B_, T_}, DType::I32)};
  fill(index, b.inputs, b.targets);
  return b;
}

}  // namespace keel::data
