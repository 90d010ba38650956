// Conversions between F32, BF16 and F16. Every 16-bit value is exact in f32,
// so going through f32 rounds once (nearest even), like the reference.
#pragma once
#include <cstring>

#include "backend/cpu/simd.h"

namespace keel::backend::cpu::KEEL_CPU_ISA {

template <class S>
void cast(DType src_dt, const void* src, DType dst_dt, void* dst, int64_t n, int threads) {
  if (src_dt == dst_dt) {
    size_t es = src_dt == DType::F32 ? 4 : 2;
    parallel_chunks(n, kElemChunk, threads, [&](int64_t lo, int64_t hi) {
      std::memcpy(static_cast<char*>(dst) + lo * es, static_cast<const char*>(src) + lo * es,
                  size_t(hi - lo) * es);
    });
    return;
  }
  with_dtype(src_dt, [&](auto st) {
    using Src = decltype(st);
    with_dtype(dst_dt, [&](auto dtag) {
      using Dst = decltype(dtag);
      auto ps = static_cast<const Src*>(src);
      auto pd = static_cast<Dst*>(dst);
      parallel_chunks(n, kElemChunk, threads, [&](int64_t lo, int64_t hi) {
        vec_loop<S>(lo, hi, [&](auto l, int64_t i) {
          using L = decltype(l);
          L::store(pd + i, L::load(ps + i));
        });
      });
    });
  });
}

}  // namespace keel::backend::cpu::KEEL_CPU_ISA
