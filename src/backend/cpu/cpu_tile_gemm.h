// Small f32 matrix products on the tiles of flash attention: C (M x N) =
// A (M x K, any row and column strides) * B (K x N, row stride ldb), optionally
// added to C (each row of C first multiplied by a per-row factor: the online
// softmax's rescale rides on the load of C). N runs along the vector lanes; R
// rows by NV vectors of C stay in registers over the whole K loop, so each B
// vector loaded feeds R FMAs. A causal tile's masked corner can be left out
// (TileTrim): those products would only meet zero probabilities or be
// overwritten by the mask. Every element of C that is computed is one fma
// chain over its k in order, whatever the blocking, so the result is the same
// at every width and thread count.
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

// Which part of a causal tile a product may skip, as a line i + shift over
// the rows i of C:
//  - Cols: columns n < i + shift of row i are masked (left unwritten);
//  - KFrom: row i needs only k >= i + shift (earlier k have zero A);
//  - KTo: row i needs only k < i + shift + 1 (later k have zero A).
// Skipping is per block of rows, at the block's most demanding row.
struct TileTrim {
  enum Kind { None, Cols, KFrom, KTo } kind = None;
  int64_t shift = 0;
};

template <class S, int R, int NV>
inline void tile_gemm_block(int64_t k0, int64_t k1, const float* A, int64_t a_row, int64_t a_col,
                            const float* B, int64_t ldb, float* C, int64_t ldc, bool accumulate,
                            const float* row_scale) {
  using V = typename S::V;
  V c[R][NV];
  for (int i = 0; i < R; ++i)
    for (int v = 0; v < NV; ++v) {
      c[i][v] = accumulate ? S::load(C + i * ldc + v * S::W) : S::zero();
      if (accumulate && row_scale) c[i][v] = S::mul(c[i][v], S::set1(row_scale[i]));
    }
  for (int64_t k = k0; k < k1; ++k) {
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

// One block of R rows at column offset `col` of a strip NV vectors wide, the
// first `skip` vectors left out.
template <class S, int R, int NV>
inline void tile_gemm_block_from(int skip, int64_t k0, int64_t k1, const float* A, int64_t a_row,
                                 int64_t a_col, const float* B, int64_t ldb, float* C, int64_t ldc,
                                 bool accumulate, const float* row_scale) {
  if constexpr (NV > 1) {
    if (skip > 0) {
      if (skip >= NV) return;
      tile_gemm_block_from<S, R, NV - 1>(skip - 1, k0, k1, A, a_row, a_col, B + S::W, ldb, C + S::W,
                                         ldc, accumulate, row_scale);
      return;
    }
  } else if (skip > 0) {
    return;
  }
  tile_gemm_block<S, R, NV>(k0, k1, A, a_row, a_col, B, ldb, C, ldc, accumulate, row_scale);
}

// Rows [i, i + R) of a strip starting at column n0, with the trim applied.
template <class S, int R, int NV>
inline void tile_gemm_rows(int64_t i, int64_t n0, int64_t K, const float* A, int64_t a_row,
                           int64_t a_col, const float* B, int64_t ldb, float* C, int64_t ldc,
                           bool accumulate, const float* row_scale, TileTrim trim) {
  int64_t k0 = 0, k1 = K;
  int skip = 0;
  if (trim.kind == TileTrim::Cols) {
    const int64_t masked = imin(imax(i + trim.shift - n0, 0), int64_t(NV) * S::W);
    skip = int(masked / S::W);
  } else if (trim.kind == TileTrim::KFrom) {
    k0 = imin(imax(i + trim.shift, 0), K);
  } else if (trim.kind == TileTrim::KTo) {
    k1 = imin(imax(i + R - 1 + trim.shift + 1, 0), K);
  }
  tile_gemm_block_from<S, R, NV>(skip, k0, k1, A + i * a_row, a_row, a_col, B, ldb, C + i * ldc,
                                 ldc, accumulate, row_scale ? row_scale + i : nullptr);
}

// All M rows of one column strip NV vectors wide starting at column n0; the
// last rows in one narrower block.
template <class S, int NV>
inline void tile_gemm_strip(int64_t n0, int64_t M, int64_t K, const float* A, int64_t a_row,
                            int64_t a_col, const float* B, int64_t ldb, float* C, int64_t ldc,
                            bool accumulate, const float* row_scale, TileTrim trim) {
  constexpr int R = kTileRows<S>;
  B += n0, C += n0;
  int64_t i = 0;
  for (; i + R <= M; i += R)
    tile_gemm_rows<S, R, NV>(i, n0, K, A, a_row, a_col, B, ldb, C, ldc, accumulate, row_scale,
                             trim);
  // R is at most 6; one case per possible remainder.
  switch (M - i) {
    case 1:
      tile_gemm_rows<S, 1, NV>(i, n0, K, A, a_row, a_col, B, ldb, C, ldc, accumulate, row_scale,
                               trim);
      break;
    case 2:
      tile_gemm_rows<S, 2, NV>(i, n0, K, A, a_row, a_col, B, ldb, C, ldc, accumulate, row_scale,
                               trim);
      break;
    case 3:
      tile_gemm_rows<S, 3, NV>(i, n0, K, A, a_row, a_col, B, ldb, C, ldc, accumulate, row_scale,
                               trim);
      break;
    case 4:
      if constexpr (R > 4)
        tile_gemm_rows<S, 4, NV>(i, n0, K, A, a_row, a_col, B, ldb, C, ldc, accumulate, row_scale,
                                 trim);
      break;
    case 5:
      if constexpr (R > 5)
        tile_gemm_rows<S, 5, NV>(i, n0, K, A, a_row, a_col, B, ldb, C, ldc, accumulate, row_scale,
                                 trim);
      break;
    default:
      break;
  }
}

// C (M x N, ldc) (+)= A (M x K) * B (K x N): strips of kTileVecs vectors, then
// one narrower strip, then the columns left over one lane at a time. With
// accumulate and row_scale, row i of C is first multiplied by row_scale[i].
template <class S>
inline void tile_gemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t a_row, int64_t a_col,
                      const float* B, int64_t ldb, float* C, int64_t ldc, bool accumulate,
                      const float* row_scale = nullptr, TileTrim trim = {}) {
  constexpr int NV = kTileVecs<S>;
  int64_t n = 0;
  for (; n + NV * S::W <= N; n += NV * S::W)
    tile_gemm_strip<S, NV>(n, M, K, A, a_row, a_col, B, ldb, C, ldc, accumulate, row_scale, trim);
  const int64_t vecs = (N - n) / S::W;
  if constexpr (NV > 1) {
    if (vecs == 1)
      tile_gemm_strip<S, 1>(n, M, K, A, a_row, a_col, B, ldb, C, ldc, accumulate, row_scale, trim);
    if constexpr (NV > 2) {
      if (vecs == 2)
        tile_gemm_strip<S, 2>(n, M, K, A, a_row, a_col, B, ldb, C, ldc, accumulate, row_scale,
                              trim);
      if (vecs == 3)
        tile_gemm_strip<S, 3>(n, M, K, A, a_row, a_col, B, ldb, C, ldc, accumulate, row_scale,
                              trim);
    }
    n += vecs * S::W;
  }
  if constexpr (S::W > 1)
    for (; n < N; ++n)
      tile_gemm_strip<Scalar, 1>(n, M, K, A, a_row, a_col, B, ldb, C, ldc, accumulate, row_scale,
                                 trim);
}

}  // namespace keel::backend::cpu::KEEL_CPU_ISA
