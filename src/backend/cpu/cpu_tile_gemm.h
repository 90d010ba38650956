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

#if defined(__AVX512F__)
// Pieces of the tile kernels' register blocks in assembly (this one and the
// bf16 one in cpu_tile_dot_bf16.h): a row of C as four zmm registers loaded
// under the mask %[m] (zero where it is 0), stored, or multiplied by the
// float at s(%[s]) through the scratch register t.
// clang-format off
#define KEEL_ASM_C_ROW(op, row, r0, r1, r2, r3) \
  op(row, "%%zmm" r0) op("64" row, "%%zmm" r1) op("128" row, "%%zmm" r2) op("192" row, "%%zmm" r3)
#define KEEL_ASM_C_LOAD(addr, reg) "vmovups " addr ", " reg " %{%[m]%}%{z%}\n\t"
#define KEEL_ASM_C_STORE(addr, reg) "vmovups " reg ", " addr "\n\t"
#define KEEL_ASM_C_SCALE(t, s, r0, r1, r2, r3)          \
  "vbroadcastss " s "(%[s]), %%zmm" t "\n\t"           \
  "vmulps %%zmm" t ", %%zmm" r0 ", %%zmm" r0 "\n\t"    \
  "vmulps %%zmm" t ", %%zmm" r1 ", %%zmm" r1 "\n\t"    \
  "vmulps %%zmm" t ", %%zmm" r2 ", %%zmm" r2 "\n\t"    \
  "vmulps %%zmm" t ", %%zmm" r3 ", %%zmm" r3 "\n\t"
#define KEEL_F32_FMA_ROW(a, r0, r1, r2, r3)             \
  "vbroadcastss " a ", %%zmm28\n\t"                    \
  "vfmadd231ps %%zmm24, %%zmm28, %%zmm" r0 "\n\t"      \
  "vfmadd231ps %%zmm25, %%zmm28, %%zmm" r1 "\n\t"      \
  "vfmadd231ps %%zmm26, %%zmm28, %%zmm" r2 "\n\t"      \
  "vfmadd231ps %%zmm27, %%zmm28, %%zmm" r3 "\n\t"
// clang-format on

// A whole 6 x 4 block of 16-float vectors: C (6 rows of 64 floats at ldc)
// loaded (zero where `load` is 0) and scaled by scale[0..5] unless scale is
// null, n steps of k of A's 6 rows (byte strides: a row, a step) against B's 4
// vectors added, C stored. Each element is the same fma chain in k order as
// the intrinsics version, so the bits are the same (f32_tile_block_mismatches
// in cpu_kernels.h checks it). In assembly because GCC 12 keeps the 24
// accumulators in registers inside the k loop but passes them through the
// stack at its edges, about 7% of the block's time at attention's K = 64.
inline void tile_gemm_6x4_asm(int64_t n, const float* A, int64_t a_row, int64_t a_col,
                              const float* B, int64_t ldb, float* C, int64_t ldc, __mmask16 load,
                              const float* scale) {
  const int64_t ra = a_row * 4, ca = a_col * 4, lb = ldb * 4, lc = ldc * 4;
  const float* A3 = A + 3 * a_row;
  float* C3 = C + 3 * ldc;
  asm volatile(
      KEEL_ASM_C_ROW(KEEL_ASM_C_LOAD, "(%[C])", "0", "1", "2", "3")
      KEEL_ASM_C_ROW(KEEL_ASM_C_LOAD, "(%[C],%[lc])", "4", "5", "6", "7")
      KEEL_ASM_C_ROW(KEEL_ASM_C_LOAD, "(%[C],%[lc],2)", "8", "9", "10", "11")
      KEEL_ASM_C_ROW(KEEL_ASM_C_LOAD, "(%[C3])", "12", "13", "14", "15")
      KEEL_ASM_C_ROW(KEEL_ASM_C_LOAD, "(%[C3],%[lc])", "16", "17", "18", "19")
      KEEL_ASM_C_ROW(KEEL_ASM_C_LOAD, "(%[C3],%[lc],2)", "20", "21", "22", "23")
      "test %[s], %[s]\n\t"
      "jz 3f\n\t"
      KEEL_ASM_C_SCALE("28", "0", "0", "1", "2", "3")
      KEEL_ASM_C_SCALE("28", "4", "4", "5", "6", "7")
      KEEL_ASM_C_SCALE("28", "8", "8", "9", "10", "11")
      KEEL_ASM_C_SCALE("28", "12", "12", "13", "14", "15")
      KEEL_ASM_C_SCALE("28", "16", "16", "17", "18", "19")
      KEEL_ASM_C_SCALE("28", "20", "20", "21", "22", "23")
      "3:\n\t"
      "test %[n], %[n]\n\t"
      "jle 2f\n\t"
      "1:\n\t"
      "vmovups (%[B]), %%zmm24\n\t"
      "vmovups 64(%[B]), %%zmm25\n\t"
      "vmovups 128(%[B]), %%zmm26\n\t"
      "vmovups 192(%[B]), %%zmm27\n\t"
      KEEL_F32_FMA_ROW("(%[A])", "0", "1", "2", "3")
      KEEL_F32_FMA_ROW("(%[A],%[ra])", "4", "5", "6", "7")
      KEEL_F32_FMA_ROW("(%[A],%[ra],2)", "8", "9", "10", "11")
      KEEL_F32_FMA_ROW("(%[A3])", "12", "13", "14", "15")
      KEEL_F32_FMA_ROW("(%[A3],%[ra])", "16", "17", "18", "19")
      KEEL_F32_FMA_ROW("(%[A3],%[ra],2)", "20", "21", "22", "23")
      "add %[ca], %[A]\n\t"
      "add %[ca], %[A3]\n\t"
      "add %[lb], %[B]\n\t"
      "dec %[n]\n\t"
      "jnz 1b\n\t"
      "2:\n\t"
      KEEL_ASM_C_ROW(KEEL_ASM_C_STORE, "(%[C])", "0", "1", "2", "3")
      KEEL_ASM_C_ROW(KEEL_ASM_C_STORE, "(%[C],%[lc])", "4", "5", "6", "7")
      KEEL_ASM_C_ROW(KEEL_ASM_C_STORE, "(%[C],%[lc],2)", "8", "9", "10", "11")
      KEEL_ASM_C_ROW(KEEL_ASM_C_STORE, "(%[C3])", "12", "13", "14", "15")
      KEEL_ASM_C_ROW(KEEL_ASM_C_STORE, "(%[C3],%[lc])", "16", "17", "18", "19")
      KEEL_ASM_C_ROW(KEEL_ASM_C_STORE, "(%[C3],%[lc],2)", "20", "21", "22", "23")
      : [A] "+r"(A), [A3] "+r"(A3), [B] "+r"(B), [n] "+r"(n)
      : [ra] "r"(ra), [ca] "r"(ca), [lb] "r"(lb), [C] "r"(C), [C3] "r"(C3), [lc] "r"(lc),
        [m] "Yk"(load), [s] "r"(scale)
      : "cc", "memory", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8",
        "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "xmm16", "xmm17", "xmm18",
        "xmm19", "xmm20", "xmm21", "xmm22", "xmm23", "xmm24", "xmm25", "xmm26", "xmm27", "xmm28");
}
#undef KEEL_F32_FMA_ROW

// x[c] = column c of the 16 x 16 matrix of 32-bit words whose row r is x[r].
inline void transpose_words_16x16(__m512i x[16]) {
  __m512i a[16], b[16];
  for (int i = 0; i < 8; ++i) {
    a[2 * i] = _mm512_unpacklo_epi32(x[2 * i], x[2 * i + 1]);
    a[2 * i + 1] = _mm512_unpackhi_epi32(x[2 * i], x[2 * i + 1]);
  }
  // b[4 i + j], 128-bit lane k: column 4 k + j of rows 4 i .. 4 i + 3.
  for (int i = 0; i < 4; ++i) {
    b[4 * i + 0] = _mm512_unpacklo_epi64(a[4 * i], a[4 * i + 2]);
    b[4 * i + 1] = _mm512_unpackhi_epi64(a[4 * i], a[4 * i + 2]);
    b[4 * i + 2] = _mm512_unpacklo_epi64(a[4 * i + 1], a[4 * i + 3]);
    b[4 * i + 3] = _mm512_unpackhi_epi64(a[4 * i + 1], a[4 * i + 3]);
  }
  for (int j = 0; j < 4; ++j) {
    const __m512i c0 = _mm512_shuffle_i32x4(b[j], b[4 + j], 0x44);
    const __m512i c1 = _mm512_shuffle_i32x4(b[j], b[4 + j], 0xEE);
    const __m512i d0 = _mm512_shuffle_i32x4(b[8 + j], b[12 + j], 0x44);
    const __m512i d1 = _mm512_shuffle_i32x4(b[8 + j], b[12 + j], 0xEE);
    x[j] = _mm512_shuffle_i32x4(c0, d0, 0x88);
    x[4 + j] = _mm512_shuffle_i32x4(c0, d0, 0xDD);
    x[8 + j] = _mm512_shuffle_i32x4(c1, d1, 0x88);
    x[12 + j] = _mm512_shuffle_i32x4(c1, d1, 0xDD);
  }
}
#endif

// Asm: the AVX-512 6 x 4 block in assembly (tile_gemm_6x4_asm), else in
// intrinsics, the same bits.
template <class S, int R, int NV, bool Asm = true>
inline void tile_gemm_block(int64_t k0, int64_t k1, const float* A, int64_t a_row, int64_t a_col,
                            const float* B, int64_t ldb, float* C, int64_t ldc, bool accumulate,
                            const float* row_scale) {
#if defined(__AVX512F__)
  if constexpr (Asm && S::W == 16 && R == 6 && NV == 4) {
    tile_gemm_6x4_asm(k1 - k0, A + k0 * a_col, a_row, a_col, B + k0 * ldb, ldb, C, ldc,
                      accumulate ? __mmask16(0xFFFF) : __mmask16(0),
                      accumulate ? row_scale : nullptr);
    return;
  }
#endif
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
