// The memory-read probe's kernel, shared by bench_serve (the roofline's read
// bandwidth) and bench_gemv (one core's plain read rate on a GEMV's bytes):
// a sum of n floats with enough loads in flight to stream at memory speed.
#pragma once
#include <immintrin.h>

#include <cstddef>

#include "core/cpu_features.h"

namespace keel::bench {

// Eight 8-lane accumulators (the generic build of a bench is SSE2 only).
__attribute__((target("avx2"))) inline float sum_avx2(const float* p, size_t n) {
  __m256 acc[8];
  for (auto& v : acc) v = _mm256_setzero_ps();
  for (size_t i = 0; i + 64 <= n; i += 64)
    for (int j = 0; j < 8; ++j) acc[j] = _mm256_add_ps(acc[j], _mm256_loadu_ps(p + i + 8 * j));
  for (int j = 1; j < 8; ++j) acc[0] = _mm256_add_ps(acc[0], acc[j]);
  alignas(32) float t[8];
  _mm256_store_ps(t, acc[0]);
  return t[0] + t[1] + t[2] + t[3] + t[4] + t[5] + t[6] + t[7];
}

inline float sum_generic(const float* p, size_t n) {
  float acc[16] = {};
  for (size_t i = 0; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; ++j) acc[j] += p[i + size_t(j)];
  float t = 0;
  for (float a : acc) t += a;
  return t;
}

// The widest of the two this CPU runs (whole 64-float groups are read).
inline float streaming_sum(const float* p, size_t n) {
  static const bool avx2 = cpu_features().avx2;
  return avx2 ? sum_avx2(p, n) : sum_generic(p, n);
}

}  // namespace keel::bench
