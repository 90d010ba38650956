// Matrix-vector products for the cpu backend: y = x @ W^T for a few rows of
// x (decode steps of a batch of sequences), the shape where a GEMM library
// spends its time packing W. Each output element is one fixed-order dot
// product over 16 lanes, whichever vector level runs it, so the result is
// bit-identical at every level and every thread count; W is streamed once.
#pragma once
#include <cstdint>

#include "backend/backend.h"

namespace keel::backend::cpu {

inline constexpr int64_t kGemvMaxRows = 8;

// Whether gemv_f32 handles these f32 matmul arguments (A not transposed, B
// transposed, one batch, M <= kGemvMaxRows).
bool gemv_applies(const MatmulArgs& a);
void gemv_f32(const MatmulArgs& a, const float* A, const float* B, float* C, int threads);

namespace gemv_detail {
// rows r0..r1 of W (stride ldw) against M rows of x (stride ldx): y[m*ldy + n]
// = alpha * dot(x_m, w_n) + beta * y (y not read when beta == 0).
using GemvFn = void (*)(const float* x, int64_t ldx, int64_t M, const float* w, int64_t ldw,
                        int64_t K, float* y, int64_t ldy, int64_t r0, int64_t r1, float alpha,
                        float beta);
GemvFn gemv_scalar();
GemvFn gemv_avx2();
GemvFn gemv_avx512();
}  // namespace gemv_detail

}  // namespace keel::backend::cpu
