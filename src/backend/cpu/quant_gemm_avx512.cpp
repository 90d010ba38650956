// Prefill-shaped quantized matmul (many activation rows) for CPUs with
// AVX-512 VNNI: activation rows are packed two to a 512-bit register, so one
// vpdpbusd forms the dots of a weight block with two rows, and each unpacked
// weight block is reused for eight rows. Every output is the blocked dot of
// quant_internal.h in its fixed order, so results equal the dot kernels'.
// GCC 12's 512-bit intrinsics start from _mm512_undefined_*(), which
// -W(maybe-)uninitialized reports as a false error.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "backend/cpu/quant_internal.h"

namespace keel::backend::cpu::quant_detail {

namespace {

// Pairs of x rows per tile: 4 pairs x 2 weight rows keep 8 accumulators and
// 8 scale vectors in registers beside the weights (32 zmm in all).
constexpr int kTilePairs = 4;

// ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7)) of one 256-bit half: the
// tree quant_internal.h fixes.
inline float hsum8(__m256 a) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// The weight block's 32 signed values (element e in byte e) in both 256-bit halves.
inline __m512i unpack2(const BlockQ8_0& b) {
  return _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs)));
}

inline __m512i unpack2(const BlockQ4_0& b) {
  // 128-bit lanes 0..3 get the 16 bytes; odd lanes shift down by 4 (high nibbles).
  const __m512i v = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b.qs)));
  const __m512i sh =
      _mm512_srlv_epi16(v, _mm512_set_epi64(0x0004000400040004, 0x0004000400040004, 0, 0,
                                            0x0004000400040004, 0x0004000400040004, 0, 0));
  return _mm512_sub_epi8(_mm512_and_si512(sh, _mm512_set1_epi8(0x0f)), _mm512_set1_epi8(8));
}

// The f16 scales of blocks r[0..n) widened to f32 in both halves, zeros past n.
template <class Block>
inline __m512 scales8x2(const Block* r, int n) {
  alignas(16) uint16_t h[8] = {};
  for (int j = 0; j < n; ++j) h[j] = r[j].d;
  const __m256 s = _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(h)));
  return _mm512_insertf32x8(_mm512_castps256_ps512(s), s, 1);
}

// out[2p + h][c] for pairs p < P and weight rows w[c], c < NW: lane j of half
// h accumulates fma(float(p_j), d_w[b] * d_x[b], acc_j) over the blocks in
// order, as the dot kernels do for one row.
template <int P, int NW, class Block>
void tile(const Block* const* w, const uint8_t* xu, const float* xs, int64_t nb, int64_t groups,
          float (*out)[2]) {
  __m512 acc[P][NW];
  for (int p = 0; p < P; ++p)
    for (int c = 0; c < NW; ++c) acc[p][c] = _mm512_setzero_ps();
  const __m512i k80 = _mm512_set1_epi8(char(0x80)), one = _mm512_set1_epi32(1);
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t b0 = 8 * g;
    const int jn = int(std::min<int64_t>(8, nb - b0));
    __m512 d[P][NW];
    for (int c = 0; c < NW; ++c) {
      const __m512 dw = scales8x2(w[c] + b0, jn);
      for (int p = 0; p < P; ++p)
        d[p][c] = _mm512_mul_ps(dw, _mm512_loadu_ps(xs + (p * groups + g) * 16));
    }
    __m512i lane = _mm512_set_epi32(8, 8, 8, 8, 8, 8, 8, 8, 0, 0, 0, 0, 0, 0, 0, 0);
    for (int j = 0; j < jn; ++j) {
      const int64_t b = b0 + j;
      __m512i wv[NW], neg[NW];
      for (int c = 0; c < NW; ++c) {
        wv[c] = unpack2(w[c][b]);
        // x is stored as x + 128 (unsigned, as vpdpbusd wants it); starting
        // each dot at -128 * sum(w) makes it the exact signed one.
        neg[c] = _mm512_sub_epi32(_mm512_setzero_si512(),
                                  _mm512_dpbusd_epi32(_mm512_setzero_si512(), k80, wv[c]));
      }
      for (int p = 0; p < P; ++p) {
        const __m512i xv = _mm512_loadu_si512(xu + (p * nb + b) * 64);
        for (int c = 0; c < NW; ++c) {
          const __m512i s = _mm512_dpbusd_epi32(neg[c], xv, wv[c]);
          acc[p][c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_permutexvar_ps(lane, d[p][c]),
                                      acc[p][c]);
        }
      }
      lane = _mm512_add_epi32(lane, one);
    }
  }
  for (int p = 0; p < P; ++p)
    for (int c = 0; c < NW; ++c) {
      out[2 * p][c] = hsum8(_mm512_castps512_ps256(acc[p][c]));
      out[2 * p + 1][c] = hsum8(_mm512_extractf32x8_ps(acc[p][c], 1));
    }
}

template <int P, class Block>
void tile_rows(const Block* const* w, int nw, const uint8_t* xu, const float* xs, int64_t nb,
               int64_t groups, float (*out)[2]) {
  if (nw == 2)
    tile<P, 2>(w, xu, xs, nb, groups, out);
  else
    tile<P, 1>(w, xu, xs, nb, groups, out);
}

template <class Block>
void gemm(const Block* w, int64_t n0, int64_t n1, int64_t N, const uint8_t* xu, const float* xs,
          int64_t M, int64_t nb, float* y) {
  const int64_t groups = (nb + 7) / 8, pairs = (M + 1) / 2;
  float out[2 * kTilePairs][2];
  for (int64_t p0 = 0; p0 < pairs; p0 += kTilePairs) {
    const int64_t pc = std::min<int64_t>(kTilePairs, pairs - p0);
    const uint8_t* xt = xu + p0 * nb * 64;
    const float* st = xs + p0 * groups * 16;
    for (int64_t n = n0; n < n1; n += 2) {
      const int nw = n + 1 < n1 ? 2 : 1;
      const Block* wr[2] = {w + n * nb, w + (n + nw - 1) * nb};
      switch (pc) {
        case 1:
          tile_rows<1>(wr, nw, xt, st, nb, groups, out);
          break;
        case 2:
          tile_rows<2>(wr, nw, xt, st, nb, groups, out);
          break;
        case 3:
          tile_rows<3>(wr, nw, xt, st, nb, groups, out);
          break;
        default:
          tile_rows<4>(wr, nw, xt, st, nb, groups, out);
          break;
      }
      const int64_t m0 = 2 * p0, mc = std::min<int64_t>(2 * pc, M - m0);
      for (int64_t i = 0; i < mc; ++i)
        for (int c = 0; c < nw; ++c) y[(m0 + i) * N + n + c] = out[i][c];
    }
  }
}

}  // namespace

void qgemm_pack_x_avx512(const BlockQ8_0* xq, const float* xd, int64_t M, int64_t nb, uint8_t* xu,
                         float* xs) {
  const int64_t groups = (nb + 7) / 8, pairs = (M + 1) / 2;
  const __m256i flip = _mm256_set1_epi8(char(0x80));
  for (int64_t p = 0; p < pairs; ++p)
    for (int h = 0; h < 2; ++h) {
      const int64_t m = 2 * p + h;
      for (int64_t b = 0; b < nb; ++b) {
        __m256i* dst = reinterpret_cast<__m256i*>(xu + (p * nb + b) * 64 + h * 32);
        // A row past M (odd M) is zero: 128 in the x + 128 encoding.
        const __m256i v =
            m < M ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq[m * nb + b].qs))
                  : _mm256_setzero_si256();
        _mm256_storeu_si256(dst, _mm256_xor_si256(v, flip));
      }
      for (int64_t g = 0; g < groups; ++g)
        for (int j = 0; j < 8; ++j) {
          const int64_t b = 8 * g + j;
          xs[(p * groups + g) * 16 + h * 8 + j] = m < M && b < nb ? xd[m * nb + b] : 0.f;
        }
    }
}

void qgemm_avx512(DType qdt, const void* w, int64_t n0, int64_t n1, int64_t N, const uint8_t* xu,
                  const float* xs, int64_t M, int64_t nb, float* y) {
  if (qdt == DType::Q8_0)
    gemm(static_cast<const BlockQ8_0*>(w), n0, n1, N, xu, xs, M, nb, y);
  else
    gemm(static_cast<const BlockQ4_0*>(w), n0, n1, N, xu, xs, M, nb, y);
}

}  // namespace keel::backend::cpu::quant_detail
