// The integer dot kernels written once over a tiny traits struct: the only
// difference between AVX2 and AVX-512 VNNI is how 32 unsigned x signed byte
// products are added into eight int32 lanes (maddubs + madd, or vpdpbusd).
// Included only by quant_avx2.cpp and quant_avx512.cpp; everything here sits
// in an unnamed namespace so the two ISA builds never meet at link time.
// Block sums use an explicit fma (as the scalar table does) so no compiler
// contraction choice can make the levels differ; it is the builtin, not
// std::fma, so no out-of-line copy built with -mfma can reach scalar code.
#pragma once
#include <immintrin.h>

#include "backend/cpu/quant_internal.h"

namespace keel::backend::cpu::quant_detail {
namespace {

inline int32_t hsum_i32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}

// acc + sum of a[i] * b[i] over 32 signed bytes (|a|, |b| <= 127). The sign
// trick moves a's sign onto b so the unsigned x signed instructions apply.
template <class D>
inline __m256i dot32(__m256i acc, __m256i a, __m256i b) {
  return D::dot(acc, _mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a));
}

// Element j of a Q4_0 block in byte j, as a signed value q - 8.
inline __m256i unpack_q4(const uint8_t* qs) {
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m128i m = _mm_set1_epi8(0x0f);
  const __m128i lo = _mm_and_si128(v, m), hi = _mm_and_si128(_mm_srli_epi16(v, 4), m);
  return _mm256_sub_epi8(_mm256_set_m128i(hi, lo), _mm256_set1_epi8(8));
}

inline __m256i load32(const void* p) {
  return _mm256_loadu_si256(static_cast<const __m256i*>(p));
}

template <class D>
int32_t dot_i8(const int8_t* a, const int8_t* b, int64_t K) {
  __m256i acc = _mm256_setzero_si256();
  int64_t k = 0;
  for (; k + 32 <= K; k += 32) acc = dot32<D>(acc, load32(a + k), load32(b + k));
  int32_t s = hsum_i32(acc);
  for (; k < K; ++k) s += int32_t(a[k]) * int32_t(b[k]);
  return s;
}

template <class D>
float dot_q8(const BlockQ8_0* w, const BlockQ8_0* x, const float* xd, int64_t nb) {
  float acc = 0.f;
  for (int64_t i = 0; i < nb; ++i) {
    int32_t s = hsum_i32(dot32<D>(_mm256_setzero_si256(), load32(w[i].qs), load32(x[i].qs)));
    acc = __builtin_fmaf(float(s), _cvtsh_ss(w[i].d) * xd[i], acc);
  }
  return acc;
}

template <class D>
float dot_q4(const BlockQ4_0* w, const BlockQ8_0* x, const float* xd, int64_t nb) {
  float acc = 0.f;
  for (int64_t i = 0; i < nb; ++i) {
    int32_t s = hsum_i32(dot32<D>(_mm256_setzero_si256(), unpack_q4(w[i].qs), load32(x[i].qs)));
    acc = __builtin_fmaf(float(s), _cvtsh_ss(w[i].d) * xd[i], acc);
  }
  return acc;
}

template <class D>
const QDotTable& table() {
  static const QDotTable t{&dot_i8<D>, &dot_q8<D>, &dot_q4<D>};
  return t;
}

}  // namespace
}  // namespace keel::backend::cpu::quant_detail
