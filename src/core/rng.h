// Counter-based random numbers (Philox4x32-10): every number is a pure function
// of (seed, stream, counter), so any draw can be regenerated from its key and
// nothing about the generator needs saving beyond the counters a caller keeps.
#pragma once
#include <array>
#include <cstdint>

namespace keel {

// Four 32-bit words from one Philox4x32-10 block.
std::array<uint32_t, 4> philox4x32(uint64_t seed, uint64_t stream, uint64_t counter);

class Rng {
 public:
  Rng(uint64_t seed, uint64_t stream) : seed_(seed), stream_(stream) {}
  // Uniform 64-bit integer number i of this (seed, stream).
  uint64_t u64(uint64_t i) const;
  // Uniform in [0, 1) with 24 random bits, number i.
  float uniform(uint64_t i) const;
  // Standard normal (Box-Muller on the block's words), number i.
  float normal(uint64_t i) const;
  // Uniform integer in [0, n), number i (n > 0; bias below 2^-32 for n < 2^32).
  uint64_t below(uint64_t i, uint64_t n) const;
  // Fills out[0..n) with normal(offset + k) * stddev.
  void fill_normal(float* out, int64_t n, float stddev, uint64_t offset = 0) const;
  // Fills out[0..n) with uniform in [lo, hi).
  void fill_uniform(float* out, int64_t n, float lo, float hi, uint64_t offset = 0) const;

  uint64_t seed() const { return seed_; }
  uint64_t stream() const { return stream_; }

 private:
  uint64_t seed_, stream_;
};

}  // namespace keel
