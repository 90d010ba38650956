// Deterministic sums over rows (bias and norm-weight gradients): rows are cut
// into fixed chunks of kRowChunk, each chunk sums into its own partial, and
// the partials are added in chunk order. Nothing depends on the thread count,
// and memory stays bounded by working on kChunkGroup chunks at a time.
#pragma once
#include "backend/cpu/simd.h"

namespace keel::backend::cpu::KEEL_CPU_ISA {

inline constexpr int64_t kChunkGroup = 32;

// total[0..width) = sum over rows i < N of what row_fn(i, part) adds into a
// zeroed part[0..width). row_fn may also write per-row outputs (dx).
template <class S, class RowFn>
void column_reduce(int64_t N, int64_t width, int threads, float* total, RowFn&& row_fn) {
  for (int64_t c = 0; c < width; ++c) total[c] = 0.f;
  int64_t nchunks = (N + kRowChunk - 1) / kRowChunk;
  Buf<float> part(imin(nchunks, kChunkGroup) * width);
  for (int64_t g0 = 0; g0 < nchunks; g0 += kChunkGroup) {
    int64_t ng = imin(kChunkGroup, nchunks - g0);
    parallel_items(
        ng, threads,
        [&](int64_t j) {
          float* p = part.p + j * width;
          for (int64_t c = 0; c < width; ++c) p[c] = 0.f;
          int64_t r0 = (g0 + j) * kRowChunk;
          for (int64_t i = r0; i < imin(N, r0 + kRowChunk); ++i) row_fn(i, p);
        },
        kRowChunk * width);
    parallel_chunks(width, 1024, threads, [&](int64_t lo, int64_t hi) {
      vec_loop<S>(lo, hi, [&](auto l, int64_t c) {
        using L = decltype(l);
        auto acc = L::load(part.p + c);
        for (int64_t j = 1; j < ng; ++j) acc = L::add(acc, L::load(part.p + j * width + c));
        L::store(total + c, L::add(L::load(total + c), acc));
      });
    });
  }
}

// out[c] += add[c] for the f32 parameter gradients.
template <class S>
inline void add_into(float* out, const float* add, int64_t n) {
  vec_loop<S>(0, n, [&](auto l, int64_t c) {
    using L = decltype(l);
    L::store(out + c, L::add(L::load(out + c), L::load(add + c)));
  });
}

}  // namespace keel::backend::cpu::KEEL_CPU_ISA
