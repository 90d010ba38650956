// Token embedding lookup and its backward. The backward scatters rows into
// dtable without atomics: work is split over fixed column blocks, each
// walking the ids in order, so every element sums in the same order always.
#pragma once
#include <cstring>

#include "backend/cpu/simd.h"

namespace keel::backend::cpu::KEEL_CPU_ISA {

inline constexpr int64_t kEmbedColBlock = 256;

template <class S>
void embedding_forward(DType dt, const int32_t* ids, const void* table, void* out, int64_t n,
                       int64_t C, int threads) {
  size_t row_bytes = size_t(C) * (dt == DType::F32 ? 4 : 2);
  int64_t rows_per = imax(1, kElemChunk / imax(C, 1));
  parallel_chunks(n, rows_per, threads, [&](int64_t r0, int64_t r1) {
    for (int64_t i = r0; i < r1; ++i)
      std::memcpy(static_cast<char*>(out) + i * row_bytes,
                  static_cast<const char*>(table) + int64_t(ids[i]) * row_bytes, row_bytes);
  });
}

template <class S>
void embedding_backward(DType dt, const int32_t* ids, const void* dout, float* dtable, int64_t n,
                        int64_t C, int threads) {
  with_dtype(dt, [&](auto t) {
    using T = decltype(t);
    auto pd = static_cast<const T*>(dout);
    parallel_chunks(C, kEmbedColBlock, threads, [&](int64_t c0, int64_t c1) {
      for (int64_t i = 0; i < n; ++i) {
        const T* src = pd + i * C;
        float* dst = dtable + int64_t(ids[i]) * C;
        vec_loop<S>(c0, c1, [&](auto l, int64_t c) {
          using L = decltype(l);
          L::store(dst + c, L::add(L::load(dst + c), L::load(src + c)));
        });
      }
    });
  });
}

}  // namespace keel::backend::cpu::KEEL_CPU_ISA
