// Internal to the cpu quantized matmul: the integer dot-product kernels, one
// table per vector level (scalar in quant.cpp, AVX2 and AVX-512 VNNI in
// quant_<isa>.cpp). Integer sums are exact, and the per-block float sums run
// in the same order at every level, so all levels give bit-identical y.
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace keel::backend::cpu::quant_detail {

struct QDotTable {
  // sum_k a[k] * b[k], exact (|a|, |b| <= 127).
  int32_t (*dot_i8)(const int8_t* a, const int8_t* b, int64_t K);
  // acc = fma(float(isum_b), d_w[b] * xd[b], acc) over nb blocks in order;
  // xd holds the x blocks' scales already widened to f32.
  float (*dot_q8)(const BlockQ8_0* w, const BlockQ8_0* x, const float* xd, int64_t nb);
  float (*dot_q4)(const BlockQ4_0* w, const BlockQ8_0* x, const float* xd, int64_t nb);
};

const QDotTable& qdot_scalar();
const QDotTable& qdot_avx2();    // only when the CPU has AVX2
const QDotTable& qdot_avx512();  // only when the CPU has AVX-512 VL + VNNI

}  // namespace keel::backend::cpu::quant_detail
