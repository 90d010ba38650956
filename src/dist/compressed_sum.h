// CompressedSum: the sum over replicas of a float vector sent through a
// gradient codec with error feedback, for slow links. Each rank encodes its
// vector plus its residual, entropy-codes the payload (zstd), all-gathers the
// payloads, and decodes and adds them in rank order, so every rank gets the
// same bits. The residual (what the codec dropped) is this rank's state.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "dist/communicator.h"
#include "dist/grad_codec.h"

namespace keel::dist {

class CompressedSum {
 public:
  // Sums of n elements; comm must outlive this. cfg.kind must not be None
  // (a lossless sum is Communicator::allreduce_sum).
  CompressedSum(Communicator& comm, GradCodecConfig cfg, int64_t n);

  // out := sum over ranks r, in rank order, of decode(encode(x_r + residual_r));
  // residual := what this rank's encoding dropped. Returns the bytes this rank
  // sent (its compressed payload to each peer, plus the size exchange).
  // `what` names the vector in errors (a corrupt payload names rank and size).
  // topk_fraction > 0 overrides the codec's share for this call (the sparsity
  // warm-up); every rank must pass the same.
  uint64_t sum(std::span<const float> x, std::span<float> out, const char* what,
               double topk_fraction = 0);

  int64_t size() const { return n_; }
  const GradCodecConfig& codec() const { return cfg_; }
  // This rank's error-feedback residual (n elements; checkpointed by the owner).
  std::span<float> residual() { return residual_; }

 private:
  Communicator& comm_;
  GradCodecConfig cfg_;
  int64_t n_;
  std::vector<float> residual_;
  std::vector<uint8_t> payload_, packed_, unpacked_;  // reused across calls
};

}  // namespace keel::dist
