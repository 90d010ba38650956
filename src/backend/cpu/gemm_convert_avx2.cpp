// AVX2 bf16 <-> f32 conversion for the bf16 GEMM fallback (widen operands,
// call sgemm, round the result once). Rounding is keel's: nearest even, NaN
// kept quiet, exactly as keel::f32_to_bf16.
#include <immintrin.h>

#include "backend/cpu/gemm_internal.h"

namespace keel::backend::cpu::gemm_detail {

namespace {
// Scalar tails, defined here rather than using the inline keel:: helpers so
// no copy of those compiled with AVX2 flags can be picked by the linker.
float widen1(uint16_t h) {
  const uint32_t u = uint32_t(h) << 16;
  float f;
  __builtin_memcpy(&f, &u, 4);
  return f;
}
uint16_t round1(float f) {
  uint32_t u;
  __builtin_memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}
}  // namespace

void bf16_to_f32_n_avx2(const uint16_t* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    __m256i w = _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16);
    _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(w));
  }
  for (; i < n; ++i) dst[i] = widen1(src[i]);
}

void f32_to_bf16_n_avx2(const float* src, uint16_t* dst, int64_t n) {
  const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff);
  const __m256i inf = _mm256_set1_epi32(0x7f800000);
  const __m256i one = _mm256_set1_epi32(1);
  const __m256i bias = _mm256_set1_epi32(0x7fff);
  const __m256i quiet = _mm256_set1_epi32(0x40);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256i u = _mm256_castps_si256(_mm256_loadu_ps(src + i));
    __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), one);
    __m256i r = _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(bias, lsb)), 16);
    __m256i nan_bits = _mm256_or_si256(_mm256_srli_epi32(u, 16), quiet);
    __m256i is_nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, abs_mask), inf);
    r = _mm256_blendv_epi8(r, nan_bits, is_nan);
    // Values fit in 16 bits, so the saturating pack is exact; fix the lane order.
    __m256i p = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), _mm256_castsi256_si128(p));
  }
  for (; i < n; ++i) dst[i] = round1(src[i]);
}

}  // namespace keel::backend::cpu::gemm_detail
