// The bf16 counterpart of tile_gemm for CPUs with AVX512-BF16: C (M x N, f32)
// (+)= A (M x K) * B (K x N) with A and B in bf16 pairs along k, one
// vdpbf16ps per pair of k, twice the products of an f32 FMA per instruction.
// A holds 32-bit words (a[k], a[k+1]) at row stride a_row and pair stride
// a_col; B holds pair rows of N words (b[k][n], b[k+1][n]), row stride ldb.
// N is a multiple of 16. The same row scale and causal trim as tile_gemm,
// counted in pairs of k; blocks of 4 rows by 4 vectors.
#pragma once
#include "backend/cpu/cpu_tile_gemm.h"

#if defined(__AVX512BF16__)
namespace keel::backend::cpu::KEEL_CPU_ISA {

// A whole 4 x 4 block: C (4 rows of 64 floats at ldc) loaded (zero where
// `load` is 0, not accumulating) and scaled by scale[0..3] unless scale is
// null, n pairs of k of A's 4 rows against B's 4 vectors added, C stored. In
// assembly because GCC 12 keeps the 16 accumulators of the intrinsics
// version in registers inside the k loop but passes them through the stack at
// its edges: bench_attention bf16 2-6% faster, the same bits.
// clang-format off
#define KEEL_DOT_ROW(a, r0, r1, r2, r3)                \
  "vpbroadcastd " a ", %%zmm20\n\t"                    \
  "vdpbf16ps %%zmm16, %%zmm20, %%zmm" r0 "\n\t"        \
  "vdpbf16ps %%zmm17, %%zmm20, %%zmm" r1 "\n\t"        \
  "vdpbf16ps %%zmm18, %%zmm20, %%zmm" r2 "\n\t"        \
  "vdpbf16ps %%zmm19, %%zmm20, %%zmm" r3 "\n\t"
// clang-format on
inline void tile_dot_4x4_asm(int64_t n, const uint32_t* A, int64_t a_row, int64_t a_col,
                             const uint32_t* B, int64_t ldb, float* C, int64_t ldc, __mmask16 load,
                             const float* scale) {
  const int64_t ra = a_row * 4, ra3 = 3 * ra, ca = a_col * 4, lb = ldb * 4;
  const int64_t lc = ldc * 4, lc3 = 3 * lc;
  asm volatile(
      KEEL_ASM_C_ROW(KEEL_ASM_C_LOAD, "(%[C])", "0", "1", "2", "3")
      KEEL_ASM_C_ROW(KEEL_ASM_C_LOAD, "(%[C],%[lc])", "4", "5", "6", "7")
      KEEL_ASM_C_ROW(KEEL_ASM_C_LOAD, "(%[C],%[lc],2)", "8", "9", "10", "11")
      KEEL_ASM_C_ROW(KEEL_ASM_C_LOAD, "(%[C],%[lc3])", "12", "13", "14", "15")
      "test %[s], %[s]\n\t"
      "jz 3f\n\t"
      KEEL_ASM_C_SCALE("20", "0", "0", "1", "2", "3")
      KEEL_ASM_C_SCALE("20", "4", "4", "5", "6", "7")
      KEEL_ASM_C_SCALE("20", "8", "8", "9", "10", "11")
      KEEL_ASM_C_SCALE("20", "12", "12", "13", "14", "15")
      "3:\n\t"
      "test %[n], %[n]\n\t"
      "jle 2f\n\t"
      "1:\n\t"
      "vmovups (%[B]), %%zmm16\n\t"
      "vmovups 64(%[B]), %%zmm17\n\t"
      "vmovups 128(%[B]), %%zmm18\n\t"
      "vmovups 192(%[B]), %%zmm19\n\t"
      KEEL_DOT_ROW("(%[A])", "0", "1", "2", "3")
      KEEL_DOT_ROW("(%[A],%[ra])", "4", "5", "6", "7")
      KEEL_DOT_ROW("(%[A],%[ra],2)", "8", "9", "10", "11")
      KEEL_DOT_ROW("(%[A],%[ra3])", "12", "13", "14", "15")
      "add %[ca], %[A]\n\t"
      "add %[lb], %[B]\n\t"
      "dec %[n]\n\t"
      "jnz 1b\n\t"
      "2:\n\t"
      KEEL_ASM_C_ROW(KEEL_ASM_C_STORE, "(%[C])", "0", "1", "2", "3")
      KEEL_ASM_C_ROW(KEEL_ASM_C_STORE, "(%[C],%[lc])", "4", "5", "6", "7")
      KEEL_ASM_C_ROW(KEEL_ASM_C_STORE, "(%[C],%[lc],2)", "8", "9", "10", "11")
      KEEL_ASM_C_ROW(KEEL_ASM_C_STORE, "(%[C],%[lc3])", "12", "13", "14", "15")
      : [A] "+r"(A), [B] "+r"(B), [n] "+r"(n)
      : [ra] "r"(ra), [ra3] "r"(ra3), [ca] "r"(ca), [lb] "r"(lb), [C] "r"(C), [lc] "r"(lc),
        [lc3] "r"(lc3), [m] "Yk"(load), [s] "r"(scale)
      : "cc", "memory", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8",
        "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "xmm16", "xmm17", "xmm18",
        "xmm19", "xmm20");
}
#undef KEEL_DOT_ROW

// Asm: 4 x 4 blocks in assembly (tile_dot_4x4_asm), else in intrinsics, the
// same bits (bf16_tile_block_mismatches in cpu_kernels.h checks it).
template <int R, int NV, bool Asm = true>
inline void tile_dot_block(int64_t k0, int64_t k1, const uint32_t* A, int64_t a_row, int64_t a_col,
                           const uint32_t* B, int64_t ldb, float* C, int64_t ldc, bool accumulate,
                           const float* row_scale) {
  if constexpr (Asm && R == 4 && NV == 4) {
    tile_dot_4x4_asm(k1 - k0, A + k0 * a_col, a_row, a_col, B + k0 * ldb, ldb, C, ldc,
                     accumulate ? __mmask16(0xFFFF) : __mmask16(0),
                     accumulate ? row_scale : nullptr);
    return;
  }
  __m512 c[R][NV];
  for (int i = 0; i < R; ++i)
    for (int v = 0; v < NV; ++v) {
      c[i][v] = accumulate ? _mm512_loadu_ps(C + i * ldc + v * 16) : _mm512_setzero_ps();
      if (accumulate && row_scale) c[i][v] = _mm512_mul_ps(c[i][v], _mm512_set1_ps(row_scale[i]));
    }
  for (int64_t k = k0; k < k1; ++k) {
    __m512bh b[NV];
    for (int v = 0; v < NV; ++v) b[v] = (__m512bh)_mm512_loadu_si512(B + k * ldb + v * 16);
    const uint32_t* ak = A + k * a_col;
    for (int i = 0; i < R; ++i) {
      const __m512bh a = (__m512bh)_mm512_set1_epi32(int(ak[i * a_row]));
      for (int v = 0; v < NV; ++v) c[i][v] = _mm512_dpbf16_ps(c[i][v], a, b[v]);
    }
  }
  for (int i = 0; i < R; ++i)
    for (int v = 0; v < NV; ++v) _mm512_storeu_ps(C + i * ldc + v * 16, c[i][v]);
}

template <int R, int NV>
inline void tile_dot_block_from(int skip, int64_t k0, int64_t k1, const uint32_t* A, int64_t a_row,
                                int64_t a_col, const uint32_t* B, int64_t ldb, float* C,
                                int64_t ldc, bool accumulate, const float* row_scale) {
  if (skip >= NV) return;
  if constexpr (NV > 1)
    if (skip > 0) {
      tile_dot_block_from<R, NV - 1>(skip - 1, k0, k1, A, a_row, a_col, B + 16, ldb, C + 16, ldc,
                                     accumulate, row_scale);
      return;
    }
  tile_dot_block<R, NV>(k0, k1, A, a_row, a_col, B, ldb, C, ldc, accumulate, row_scale);
}

// Rows [i, i + R) of the strip at column n0; the trim is in k (not pair) units.
template <int R, int NV>
inline void tile_dot_rows(int64_t i, int64_t n0, int64_t K2, const uint32_t* A, int64_t a_row,
                          int64_t a_col, const uint32_t* B, int64_t ldb, float* C, int64_t ldc,
                          bool accumulate, const float* row_scale, TileTrim trim) {
  int64_t k0 = 0, k1 = K2;
  int skip = 0;
  if (trim.kind == TileTrim::Cols) {
    skip = int(imin(imax(i + trim.shift - n0, 0), int64_t(NV) * 16) / 16);
  } else if (trim.kind == TileTrim::KFrom) {
    k0 = imin(imax(i + trim.shift, 0), 2 * K2) / 2;
  } else if (trim.kind == TileTrim::KTo) {
    k1 = (imin(imax(i + R + trim.shift, 0), 2 * K2) + 1) / 2;
  }
  tile_dot_block_from<R, NV>(skip, k0, k1, A + i * a_row, a_row, a_col, B, ldb, C + i * ldc, ldc,
                             accumulate, row_scale ? row_scale + i : nullptr);
}

template <int NV>
inline void tile_dot_strip(int64_t n0, int64_t M, int64_t K2, const uint32_t* A, int64_t a_row,
                           int64_t a_col, const uint32_t* B, int64_t ldb, float* C, int64_t ldc,
                           bool accumulate, const float* row_scale, TileTrim trim) {
  // Four rows, not tile_gemm's six, measured: bench_attention --cpu-time,
  // bf16, alternated, the backward 3-6% faster (llama T=2048 0.77-0.80 ->
  // 0.82-0.84 of the GEMM rate) with the intrinsics block; with the 4 x 4
  // block in assembly, six rows (24 accumulators) measured the same.
  constexpr int R = 4;
  B += n0, C += n0;
  int64_t i = 0;
  for (; i + R <= M; i += R)
    tile_dot_rows<R, NV>(i, n0, K2, A, a_row, a_col, B, ldb, C, ldc, accumulate, row_scale, trim);
  switch (M - i) {
    case 1:
      tile_dot_rows<1, NV>(i, n0, K2, A, a_row, a_col, B, ldb, C, ldc, accumulate, row_scale, trim);
      break;
    case 2:
      tile_dot_rows<2, NV>(i, n0, K2, A, a_row, a_col, B, ldb, C, ldc, accumulate, row_scale, trim);
      break;
    case 3:
      tile_dot_rows<3, NV>(i, n0, K2, A, a_row, a_col, B, ldb, C, ldc, accumulate, row_scale, trim);
      break;
    default:
      break;
  }
}

// C (M x N) (+)= A B over K2 pairs of k; N a multiple of 16.
inline void tile_dot_bf16(int64_t M, int64_t N, int64_t K2, const uint32_t* A, int64_t a_row,
                          int64_t a_col, const uint32_t* B, int64_t ldb, float* C, int64_t ldc,
                          bool accumulate, const float* row_scale = nullptr, TileTrim trim = {}) {
  int64_t n = 0;
  for (; n + 64 <= N; n += 64)
    tile_dot_strip<4>(n, M, K2, A, a_row, a_col, B, ldb, C, ldc, accumulate, row_scale, trim);
  switch ((N - n) / 16) {
    case 1:
      tile_dot_strip<1>(n, M, K2, A, a_row, a_col, B, ldb, C, ldc, accumulate, row_scale, trim);
      break;
    case 2:
      tile_dot_strip<2>(n, M, K2, A, a_row, a_col, B, ldb, C, ldc, accumulate, row_scale, trim);
      break;
    case 3:
      tile_dot_strip<3>(n, M, K2, A, a_row, a_col, B, ldb, C, ldc, accumulate, row_scale, trim);
      break;
    default:
      break;
  }
}

// Pair rows of a bf16 matrix: out[j2 * ldo + c] = (x[2 j2][c], x[2 j2 + 1][c])
// for rows x[j] = base + j * stride, j < rows, and c < ldo (a multiple of
// 16); zero where the odd row is missing or c >= cols.
inline void pack_bf16_pairs(const uint16_t* base, int64_t stride, int64_t rows, int64_t cols,
                            uint32_t* out, int64_t ldo) {
  for (int64_t j = 0; j < rows; j += 2) {
    const uint16_t* lo = base + j * stride;
    const uint16_t* hi = lo + stride;
    uint32_t* o = out + (j / 2) * ldo;
    for (int64_t c = 0; c < ldo; c += 16) {
      const __mmask16 m = cols - c >= 16 ? __mmask16(0xFFFF)
                          : cols > c     ? __mmask16((1u << (cols - c)) - 1u)
                                         : __mmask16(0);
      const __m512i l = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, lo + c));
      const __m512i h = j + 1 < rows ? _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, hi + c))
                                     : _mm512_setzero_si512();
      _mm512_storeu_si512(o + c, _mm512_or_si512(l, _mm512_slli_epi32(h, 16)));
    }
  }
}

// The same for N columns (a multiple of 16) stored N words apart.
inline void pack_bf16_pairs(const bf16_t* base, int64_t stride, int64_t rows, int64_t N,
                            uint32_t* out) {
  pack_bf16_pairs(reinterpret_cast<const uint16_t*>(base), stride, rows, N, out, N);
}

// The words of rows r < n (HS bf16 each, at base + r * stride) along the
// lanes: out[d2 * ld + r] = (x_r[2 d2], x_r[2 d2 + 1]) for r < nrows (a
// multiple of 16) and d2 < (HS + 1) / 2; zero for rows from n on and past HS.
// A tile's queries as the B operand of its scores, and a GEMM's B stored n x
// k: 16 x 16 word transposes in registers, where one 4-byte copy per word
// waited on the rows' loads.
inline void transpose_row_pairs(const bf16_t* base, int64_t stride, int64_t n, int64_t nrows,
                                int64_t HS, uint32_t* out, int64_t ld) {
  for (int64_t r0 = 0; r0 < nrows; r0 += 16)
    for (int64_t c = 0; c < HS; c += 32) {
      const __mmask32 m = HS - c >= 32 ? __mmask32(0xFFFFFFFFu) : __mmask32((1u << (HS - c)) - 1u);
      __m512i x[16];
      for (int i = 0; i < 16; ++i)
        x[i] = r0 + i < n ? _mm512_maskz_loadu_epi16(m, base + (r0 + i) * stride + c)
                          : _mm512_setzero_si512();
      transpose_words_16x16(x);
      const int64_t words = HS - c >= 32 ? 16 : (HS - c + 1) / 2;
      for (int i = 0; i < words; ++i) _mm512_storeu_si512(out + (c / 2 + i) * ld + r0, x[i]);
    }
}

}  // namespace keel::backend::cpu::KEEL_CPU_ISA
#endif
