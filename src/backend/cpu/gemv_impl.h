// The GEMV kernel written once over a lane-group traits struct (Scalar,
// Avx2, Avx512). Every level keeps 16 partial sums per (x row, W row) --
// lane j sums k = j mod 16 with one fma each -- and adds them in the same
// tree, so the levels agree bit for bit. Included only by gemv*.cpp; the
// unnamed namespace keeps the per-ISA copies apart at link time.
#pragma once
#include <cmath>
#include <cstdint>

#include "backend/cpu/gemv.h"

namespace keel::backend::cpu::gemv_detail {
namespace {

// Up to 4 x rows against one W row at a time: 4 x 16 accumulators fit the
// AVX2 register file with room for the loads.
template <class L>
void gemv_rows(const float* x, int64_t ldx, int64_t M, const float* w, int64_t ldw, int64_t K,
               float* y, int64_t ldy, int64_t r0, int64_t r1, float alpha, float beta) {
  const int64_t K16 = K / 16 * 16;
  for (int64_t m0 = 0; m0 < M; m0 += 4) {
    const int64_t mc = M - m0 < 4 ? M - m0 : 4;
    for (int64_t n = r0; n < r1; ++n) {
      const float* wr = w + n * ldw;
      typename L::Acc acc[4];
      for (int64_t i = 0; i < mc; ++i) acc[i] = L::zero();
      for (int64_t k = 0; k < K16; k += 16) {
        const typename L::Acc wv = L::load(wr + k);
        for (int64_t i = 0; i < mc; ++i)
          acc[i] = L::fma(wv, L::load(x + (m0 + i) * ldx + k), acc[i]);
      }
      for (int64_t i = 0; i < mc; ++i) {
        float s = L::reduce(acc[i]);
        const float* xr = x + (m0 + i) * ldx;
        for (int64_t k = K16; k < K; ++k) s = L::fma1(wr[k], xr[k], s);
        float* out = y + (m0 + i) * ldy + n;
        *out = beta == 0.f ? alpha * s : alpha * s + beta * *out;
      }
    }
  }
}

// The fixed tree over 16 partial sums: halves, then quarters, ... .
inline float tree16(float* p) {
  for (int w = 8; w >= 1; w /= 2)
    for (int j = 0; j < w; ++j) p[j] = p[j] + p[j + w];
  return p[0];
}

}  // namespace
}  // namespace keel::backend::cpu::gemv_detail
