// Batch-1 decode dot of two Q4_0 weight rows with one activation row in
// 512-bit registers (AVX-512 VNNI): row 0's eight lanes in the low half, row
// 1's in the high half, each in quant_internal.h's fixed order, so the result
// is bit for bit two single-row dots. Q4_0 decode is bound by unpacking, not
// memory; this form unpacks both rows in one register and needs no sign
// trick (the nibbles are the unsigned operand of vpdpbusd).
// GCC 12's 512-bit intrinsics start from _mm512_undefined_*(), which
// -W(maybe-)uninitialized reports as a false error.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include <algorithm>

#include "backend/cpu/quant_internal.h"

namespace keel::backend::cpu::quant_detail {

namespace {

// ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7)) of one 256-bit half.
inline float hsum8(__m256 a) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// The f16 scales of blocks r[0..n) widened to f32, zeros past n.
inline __m256 scales8(const BlockQ4_0* r, int n) {
  if (n == 8)
    return _mm256_cvtph_ps(_mm_setr_epi16(short(r[0].d), short(r[1].d), short(r[2].d),
                                          short(r[3].d), short(r[4].d), short(r[5].d),
                                          short(r[6].d), short(r[7].d)));
  alignas(16) uint16_t h[8] = {};
  for (int j = 0; j < n; ++j) h[j] = r[j].d;
  return _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(h)));
}

// Weight rows stream from memory once per token: the same distance as the
// 256-bit kernels (quant_dot.h), for both rows.
constexpr int64_t kPrefetchBytes = 2048;

}  // namespace

void dot_q4_pair_avx512(const BlockQ4_0* w, const BlockQ8_0* x, const float* xd, int64_t nb,
                        float* out) {
  const BlockQ4_0* w1 = w + nb;
  __m512 acc = _mm512_setzero_ps();
  const __m512i k8 = _mm512_set1_epi8(8), low4 = _mm512_set1_epi8(0x0f), one = _mm512_set1_epi32(1);
  // 128-bit lanes [row 0, row 0, row 1, row 1]; odd lanes take the high nibbles.
  const __m512i spread = _mm512_set_epi64(3, 2, 3, 2, 1, 0, 1, 0);
  const __m512i shift = _mm512_set_epi64(0x0004000400040004, 0x0004000400040004, 0, 0,
                                         0x0004000400040004, 0x0004000400040004, 0, 0);
  for (int64_t b0 = 0; b0 < nb; b0 += 8) {
    const int jn = int(std::min<int64_t>(8, nb - b0));
    const char* p0 = reinterpret_cast<const char*>(w + b0) + kPrefetchBytes;
    const char* p1 = reinterpret_cast<const char*>(w1 + b0) + kPrefetchBytes;
    for (int64_t o = 0; o < int64_t(8 * sizeof(BlockQ4_0)); o += 64) {
      _mm_prefetch(p0 + o, _MM_HINT_T0);
      _mm_prefetch(p1 + o, _MM_HINT_T0);
    }
    const __m256 dx = _mm256_maskz_loadu_ps(__mmask8((1u << jn) - 1), xd + b0);
    const __m512 d =
        _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_mul_ps(scales8(w + b0, jn), dx)),
                           _mm256_mul_ps(scales8(w1 + b0, jn), dx), 1);
    __m512i lane = _mm512_set_epi32(8, 8, 8, 8, 8, 8, 8, 8, 0, 0, 0, 0, 0, 0, 0, 0);
    for (int j = 0; j < jn; ++j) {
      const int64_t b = b0 + j;
      const __m512i xb =
          _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x[b].qs)));
      const __m256i q = _mm256_inserti128_si256(
          _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w[b].qs))),
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(w1[b].qs)), 1);
      const __m512i nib = _mm512_and_si512(
          _mm512_srlv_epi16(_mm512_permutexvar_epi64(spread, _mm512_castsi256_si512(q)), shift),
          low4);
      // sum (q - 8) x = sum q x - 8 sum x, both exact: q is the unsigned operand.
      const __m512i p = _mm512_sub_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), nib, xb),
                                         _mm512_dpbusd_epi32(_mm512_setzero_si512(), k8, xb));
      acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_permutexvar_ps(lane, d), acc);
      lane = _mm512_add_epi32(lane, one);
    }
  }
  out[0] = hsum8(_mm512_castps512_ps256(acc));
  out[1] = hsum8(_mm512_extractf32x8_ps(acc, 1));
}

}  // namespace keel::backend::cpu::quant_detail
