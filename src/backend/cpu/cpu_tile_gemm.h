// Small f32 matrix products on the tiles of flash attention: C (M x N) =
// A (M x K, any row and column strides) * B (K x N, row stride ldb), optionally
// added to C. N runs along the vector lanes; R rows by NV vectors of C stay in
// registers over the whole K loop, so each B vector loaded feeds R FMAs.
// Every element of C is one fma chain over k = 0..K-1 in order, whatever the
// blocking, so the result is the same at every width.
#pragma once
#include "backend/cpu/simd.h"

namespace keel::backend::cpu::KEEL_CPU_ISA {

// Register blocking: rows x vectors of accumulators that fit the register
// file with the B vectors and a broadcast beside them (32 zmm, 16 ymm).
template <class S>
inline constexpr int kTileRows = S::W == 16 ? 6 : 4;
template <class S>
inline constexpr int kTileVecs = S::W == 16  ? 4
                                 : S::W == 8 ? 2
                                             : 1;

template <class S, int R, int NV>
inline void tile_gemm_block(int64_t K, const float* A, int64_t a_row, int64_t a_col, const float* B,
                            int64_t ldb, float* C, int64_t ldc, bool accumulate) {
  using V = typename S::V;
  V c[R][NV];
  for (int i = 0; i < R; ++i)
    for (int v = 0; v < NV; ++v) c[i][v] = accumulate ? S::load(C + i * ldc + v * S::W) : S::zero();
  for (int64_t k = 0; k < K; ++k) {
    V b[NV];
    for (int v = 0; v < NV; ++v) b[v] = S::load(B + k * ldb + v * S::W);
    const float* ak = A + k * a_col;
    for (int i = 0; i < R; ++i) {
      const V a = S::set1(ak[i * a_row]);
      for (int v = 0; v < NV; ++v) c[i][v] = S::fma(a, b[v], c[i][v]);
    }
  }
  for (int i = 0; i < R; ++i)
    for (int v = 0; v < NV; ++v) S::store(C + i * ldc + v * S::W, c[i][v]);
}

// All M rows of one column strip NV vectors wide; the last rows in one
// narrower block.
template <class S, int NV>
inline void tile_gemm_strip(int64_t M, int64_t K, const float* A, int64_t a_row, int64_t a_col,
                            const float* B, int64_t ldb, float* C, int64_t ldc, bool accumulate) {
  constexpr int R = kTileRows<S>;
  int64_t i = 0;
  for (; i + R <= M; i += R)
    tile_gemm_block<S, R, NV>(K, A + i * a_row, a_row, a_col, B, ldb, C + i * ldc, ldc, accumulate);
  const int64_t rest = M - i;
  const float* Ai = A + i * a_row;
  float* Ci = C + i * ldc;
  // R is at most 6; one case per possible remainder.
  switch (rest) {
    case 1:
      tile_gemm_block<S, 1, NV>(K, Ai, a_row, a_col, B, ldb, Ci, ldc, accumulate);
      break;
    case 2:
      tile_gemm_block<S, 2, NV>(K, Ai, a_row, a_col, B, ldb, Ci, ldc, accumulate);
      break;
    case 3:
      tile_gemm_block<S, 3, NV>(K, Ai, a_row, a_col, B, ldb, Ci, ldc, accumulate);
      break;
    case 4:
      if constexpr (R > 4)
        tile_gemm_block<S, 4, NV>(K, Ai, a_row, a_col, B, ldb, Ci, ldc, accumulate);
      break;
    case 5:
      if constexpr (R > 5)
        tile_gemm_block<S, 5, NV>(K, Ai, a_row, a_col, B, ldb, Ci, ldc, accumulate);
      break;
    default:
      break;
  }
}

// C (M x N, ldc) (+)= A (M x K) * B (K x N): strips of kTileVecs vectors, then
// one narrower strip, then the columns left over one lane at a time.
template <class S>
inline void tile_gemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t a_row, int64_t a_col,
                      const float* B, int64_t ldb, float* C, int64_t ldc, bool accumulate) {
  constexpr int NV = kTileVecs<S>;
  int64_t n = 0;
  for (; n + NV * S::W <= N; n += NV * S::W)
    tile_gemm_strip<S, NV>(M, K, A, a_row, a_col, B + n, ldb, C + n, ldc, accumulate);
  const int64_t vecs = (N - n) / S::W;
  if constexpr (NV > 1) {
    if (vecs == 1) tile_gemm_strip<S, 1>(M, K, A, a_row, a_col, B + n, ldb, C + n, ldc, accumulate);
    if constexpr (NV > 2) {
      if (vecs == 2)
        tile_gemm_strip<S, 2>(M, K, A, a_row, a_col, B + n, ldb, C + n, ldc, accumulate);
      if (vecs == 3)
        tile_gemm_strip<S, 3>(M, K, A, a_row, a_col, B + n, ldb, C + n, ldc, accumulate);
    }
    n += vecs * S::W;
  }
  if constexpr (S::W > 1)
    for (; n < N; ++n)
      tile_gemm_strip<Scalar, 1>(M, K, A, a_row, a_col, B + n, ldb, C + n, ldc, accumulate);
}

}  // namespace keel::backend::cpu::KEEL_CPU_ISA
