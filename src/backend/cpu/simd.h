// SIMD traits for the cpu kernels: each kernel is written once as a template
// over a traits struct (Scalar, Avx2, Avx512) and instantiated per ISA in the
// cpu_kernels_<isa>.cpp files. The traits are deliberately tiny so the
// AVX-512 variant, which cannot run on every developer machine, stays
// obviously equivalent to the AVX2 one.
//
// Included only from cpu_kernels_<isa>.cpp, which define KEEL_CPU_ISA (the
// namespace every template lands in) so the same template compiled with
// different -m flags never meets another copy at link time.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "backend/backend.h"
#include "core/cpu_features.h"
#include "core/dtype.h"

#ifndef KEEL_CPU_ISA
#error "simd.h is included only by cpu_kernels_<isa>.cpp, which define KEEL_CPU_ISA"
#endif

namespace keel::backend::cpu::KEEL_CPU_ISA {

inline uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float float_of(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
// Same rounding as keel::f32_to_bf16 (nearest even, NaN kept quiet); redefined
// here so every instruction of a kernel comes from this translation unit.
inline uint16_t bf16_round(float f) {
  uint32_t u = bits_of(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

// One lane. min/max follow the x86 rule (the second operand when either is
// NaN) so a kernel written over traits behaves the same at every width.
struct Scalar {
  static constexpr int W = 1;
  using V = float;
  using D = double;
  static V zero() { return 0.f; }
  static V set1(float x) { return x; }
  static V load(const float* p) { return *p; }
  static V load(const bf16_t* p) { return float_of(uint32_t(p->bits) << 16); }
  static V load(const f16_t* p) { return f16_to_f32(p->bits); }
  static void store(float* p, V v) { *p = v; }
  static void store(bf16_t* p, V v) { p->bits = bf16_round(v); }
  static void store(f16_t* p, V v) { p->bits = f32_to_f16(v); }
  static V add(V a, V b) { return a + b; }
  static V sub(V a, V b) { return a - b; }
  static V mul(V a, V b) { return a * b; }
  static V div(V a, V b) { return a / b; }
  static V fma(V a, V b, V c) { return std::fma(a, b, c); }  // a*b+c, one rounding
  static V sqrt(V a) { return std::sqrt(a); }
  static V min(V a, V b) { return a < b ? a : b; }
  static V max(V a, V b) { return a > b ? a : b; }
  static V swap_pairs(V a) { return a; }  // unused at W = 1
  static float hsum(V a) { return a; }
  static float hmax(V a) { return a; }
  // 2^n for a float n = integer + 12582912 + 127 produced by the exp magic.
  static V pow2_from_magic(V t) { return float_of(bits_of(t) << 23); }
  static D dzero() { return 0.0; }
  static void sq_acc(D& lo, D& hi, V x) {
    (void)hi;
    double d = x;
    lo += d * d;
  }
  static double dhsum(D a) { return a; }
};

#if defined(__AVX2__)
struct Avx2 {
  static constexpr int W = 8;
  using V = __m256;
  using D = __m256d;
  static V zero() { return _mm256_setzero_ps(); }
  static V set1(float x) { return _mm256_set1_ps(x); }
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static V load(const bf16_t* p) {
    __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
  static V load(const f16_t* p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static void store(bf16_t* p, V v) {
    __m256i u = _mm256_castps_si256(v);
    __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    __m256i r = _mm256_srli_epi32(
        _mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), lsb), 16);
    __m256i nan_bits = _mm256_or_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(0x40));
    __m256i abs = _mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff));
    __m256i is_nan = _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(0x7f800000));
    r = _mm256_blendv_epi8(r, nan_bits, is_nan);
    r = _mm256_and_si256(r, _mm256_set1_epi32(0xffff));
    // packus works per 128-bit half: lanes 0-3 and 4-7 land in qwords 0 and 2.
    __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0xd8);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_castsi256_si128(packed));
  }
  static void store(f16_t* p, V v) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p),
                     _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V sub(V a, V b) { return _mm256_sub_ps(a, b); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static V div(V a, V b) { return _mm256_div_ps(a, b); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V sqrt(V a) { return _mm256_sqrt_ps(a); }
  static V min(V a, V b) { return _mm256_min_ps(a, b); }
  static V max(V a, V b) { return _mm256_max_ps(a, b); }
  static V swap_pairs(V a) { return _mm256_permute_ps(a, 0xb1); }
  static float hsum(V a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static float hmax(V a) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  static V pow2_from_magic(V t) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_castps_si256(t), 23));
  }
  static D dzero() { return _mm256_setzero_pd(); }
  static void sq_acc(D& lo, D& hi, V x) {
    __m256d a = _mm256_cvtps_pd(_mm256_castps256_ps128(x));
    __m256d b = _mm256_cvtps_pd(_mm256_extractf128_ps(x, 1));
    lo = _mm256_fmadd_pd(a, a, lo);
    hi = _mm256_fmadd_pd(b, b, hi);
  }
  static double dhsum(D a) {
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(a), _mm256_extractf128_pd(a, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
  }
};
#endif

#if defined(__AVX512F__)
// Stores v rounded to bf16 with vcvtneps2bf16 where the CPU has AVX512-BF16 and
// returns true; false (nothing stored) otherwise. The instruction rounds to
// nearest even and quiets NaN exactly like bf16_round, but flushes subnormal
// inputs to zero, so vectors holding one are left to the exact integer path:
// results are the same bits on every AVX-512 CPU.
inline bool store_bf16_by_instruction(bf16_t* p, __m512 v) {
#if defined(__AVX512BF16__)
  static const bool has = cpu_features().avx512_bf16;  // the TU also runs without BF16
  if (!has) return false;
  const __m512i mag = _mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(0x7fffffff));
  if (_mm512_cmplt_epu32_mask(_mm512_sub_epi32(mag, _mm512_set1_epi32(1)),
                              _mm512_set1_epi32(0x007fffff)))
    return false;
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), (__m256i)_mm512_cvtneps_pbh(v));
  return true;
#else
  (void)p, (void)v;
  return false;
#endif
}

// Same operations as Avx2 at 16 lanes (AVX512F only).
struct Avx512 {
  static constexpr int W = 16;
  using V = __m512;
  using D = __m512d;
  static V zero() { return _mm512_setzero_ps(); }
  static V set1(float x) { return _mm512_set1_ps(x); }
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static V load(const bf16_t* p) {
    __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
  static V load(const f16_t* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static void store(bf16_t* p, V v) {
    if (store_bf16_by_instruction(p, v)) return;
    __m512i u = _mm512_castps_si512(v);
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_srli_epi32(
        _mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), lsb), 16);
    __m512i nan_bits = _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
    __m512i abs = _mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff));
    __mmask16 is_nan = _mm512_cmpgt_epu32_mask(abs, _mm512_set1_epi32(0x7f800000));
    r = _mm512_mask_blend_epi32(is_nan, r, nan_bits);
    // vpmovdw keeps the low 16 bits of each lane, which hold the result.
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(r));
  }
  static void store(f16_t* p, V v) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p),
                        _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static V sub(V a, V b) { return _mm512_sub_ps(a, b); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static V div(V a, V b) { return _mm512_div_ps(a, b); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V sqrt(V a) { return _mm512_sqrt_ps(a); }
  static V min(V a, V b) { return _mm512_min_ps(a, b); }
  static V max(V a, V b) { return _mm512_max_ps(a, b); }
  static V swap_pairs(V a) { return _mm512_permute_ps(a, 0xb1); }
  static float hsum(V a) {
    __m256 h = _mm256_add_ps(_mm512_castps512_ps256(a),
                             _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1)));
    return Avx2::hsum(h);
  }
  static float hmax(V a) {
    __m256 h = _mm256_max_ps(_mm512_castps512_ps256(a),
                             _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1)));
    return Avx2::hmax(h);
  }
  static V pow2_from_magic(V t) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_castps_si512(t), 23));
  }
  static D dzero() { return _mm512_setzero_pd(); }
  static void sq_acc(D& lo, D& hi, V x) {
    __m512d a = _mm512_cvtps_pd(_mm512_castps512_ps256(x));
    __m512d b = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1)));
    lo = _mm512_fmadd_pd(a, a, lo);
    hi = _mm512_fmadd_pd(b, b, hi);
  }
  static double dhsum(D a) {
    __m256d h = _mm256_add_pd(_mm512_castpd512_pd256(a), _mm512_extractf64x4_pd(a, 1));
    return Avx2::dhsum(h);
  }
};
#endif

// exp(x) for any lane width: Cody-Waite reduction and a degree-6 polynomial
// (about 1 ulp). Built only from traits operations, so every level, the
// vector body and the scalar tail give the same bits for the same input.
// NaN propagates; inputs below ln(FLT_MIN) give about 1e-38 instead of 0.
template <class S>
inline typename S::V exp_v(typename S::V x) {
  using V = typename S::V;
  x = S::max(S::set1(-87.33654f), S::min(S::set1(88.3762626647949f), x));
  V t = S::fma(x, S::set1(1.44269504088896341f), S::set1(12582912.f + 127.f));
  V n = S::sub(t, S::set1(12582912.f + 127.f));
  V r = S::fma(n, S::set1(-0.693359375f), x);
  r = S::fma(n, S::set1(2.12194440e-4f), r);
  V p = S::set1(1.9875691500e-4f);
  p = S::fma(p, r, S::set1(1.3981999507e-3f));
  p = S::fma(p, r, S::set1(8.3334519073e-3f));
  p = S::fma(p, r, S::set1(4.1665795894e-2f));
  p = S::fma(p, r, S::set1(1.6666665459e-1f));
  p = S::fma(p, r, S::set1(5.0000001201e-1f));
  V r2 = S::mul(r, r);
  p = S::fma(p, r2, S::add(r, S::set1(1.f)));
  return S::mul(p, S::pow2_from_magic(t));
}

// 2^x for x <= 0 (softmax terms in base 2, scores already shifted by their
// running max): round-to-nearest split x = n + f, |f| <= 1/2, and a degree-5
// polynomial for 2^f (relative error below 2.5e-7, two ulps). About half the
// operations of exp_v, as the softmax needs no Cody-Waite reduction once
// log2(e) is folded into the query scale. x <= -127 (and -inf) gives 0; NaN
// propagates. Built from traits operations: the same bits at every width.
template <class S>
inline typename S::V exp2_nonpos_v(typename S::V x) {
  using V = typename S::V;
  x = S::max(S::set1(-127.f), x);
  const V t = S::add(x, S::set1(12582912.f + 127.f));
  const V f = S::sub(x, S::sub(t, S::set1(12582912.f + 127.f)));
  V p = S::set1(1.326472731307149e-3f);
  p = S::fma(p, f, S::set1(9.671512991189957e-3f));
  p = S::fma(p, f, S::set1(5.550733581185341e-2f));
  p = S::fma(p, f, S::set1(2.4022242426872253e-1f));
  p = S::fma(p, f, S::set1(6.931470036506653e-1f));
  p = S::fma(p, f, S::set1(1.f));
  return S::mul(p, S::pow2_from_magic(t));
}

// Small RAII buffer from malloc: std containers are avoided in these
// translation units so no std template is compiled with two ISA flag sets.
template <class T>
struct Buf {
  T* p = nullptr;
  explicit Buf(int64_t n) : p(static_cast<T*>(std::malloc(size_t(n > 0 ? n : 1) * sizeof(T)))) {}
  ~Buf() { std::free(p); }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
  T& operator[](int64_t i) { return p[i]; }
};

inline int64_t imin(int64_t a, int64_t b) {
  return a < b ? a : b;
}
inline int64_t imax(int64_t a, int64_t b) {
  return a > b ? a : b;
}

// Runs body(S{}, i) over whole vectors of [lo, hi) and body(Scalar{}, i) over
// the remainder: a kernel body is written once as a generic lambda.
template <class S, class Body>
inline void vec_loop(int64_t lo, int64_t hi, Body&& body) {
  int64_t i = lo;
  for (; i + S::W <= hi; i += S::W) body(S{}, i);
  for (; i < hi; ++i) body(Scalar{}, i);
}

// sum_c f(c) where f is a vector-or-scalar generic lambda returning L::V.
template <class S, class F>
inline float row_sum(int64_t C, F&& f) {
  auto a0 = S::zero(), a1 = S::zero();
  int64_t c = 0;
  for (; c + 2 * S::W <= C; c += 2 * S::W) {
    a0 = S::add(a0, f(S{}, c));
    a1 = S::add(a1, f(S{}, c + S::W));
  }
  for (; c + S::W <= C; c += S::W) a0 = S::add(a0, f(S{}, c));
  float s = S::hsum(S::add(a0, a1));
  float t = 0.f;
  for (; c < C; ++c) t += f(Scalar{}, c);
  return s + t;
}

// Two sums in one pass: f(l, c, a, b) adds its lanes' terms into a and b.
struct Sums2 {
  float a, b;
};
template <class S, class F>
inline Sums2 row_sum2(int64_t C, F&& f) {
  auto a = S::zero(), b = S::zero();
  int64_t c = 0;
  for (; c + S::W <= C; c += S::W) f(S{}, c, a, b);
  float ta = 0.f, tb = 0.f;
  for (; c < C; ++c) f(Scalar{}, c, ta, tb);
  return {S::hsum(a) + ta, S::hsum(b) + tb};
}

// Elementwise work is cut into chunks of this many elements; the cut depends
// only on n, so results never depend on the thread count.
inline constexpr int64_t kElemChunk = int64_t(1) << 14;
// Cross-row reductions combine partials of this many rows in chunk order.
inline constexpr int64_t kRowChunk = 64;

// f(lo, hi) over fixed chunks of [0, n), statically spread over threads.
// Serial work never enters an OpenMP region: libgomp builds a team even for
// one with if(false), measured 1.6 us per call, 30x a decode step's residual
// add of 768 values.
template <class F>
inline void parallel_chunks(int64_t n, int64_t chunk, int threads, F&& f) {
  int64_t nchunks = (n + chunk - 1) / chunk;
  if (threads <= 1 || nchunks <= 1) {
    for (int64_t c = 0; c < nchunks; ++c) f(c * chunk, imin(n, (c + 1) * chunk));
    return;
  }
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t c = 0; c < nchunks; ++c) f(c * chunk, imin(n, (c + 1) * chunk));
}

// f(i) for i in [0, n): one work item each (rows, heads), static schedule.
// Runs serially when the whole job (n * item_work elements) is too small to
// pay for waking threads; the result is the same either way.
template <class F>
inline void parallel_items(int64_t n, int threads, F&& f, int64_t item_work = kElemChunk) {
  if (threads <= 1 || n <= 1 || n * item_work < kElemChunk) {
    for (int64_t i = 0; i < n; ++i) f(i);
    return;
  }
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t i = 0; i < n; ++i) f(i);
}

// Calls f(T{}) with T the storage type of activation dtype dt.
template <class F>
inline void with_dtype(DType dt, F&& f) {
  switch (dt) {
    case DType::BF16:
      f(bf16_t{});
      break;
    case DType::F16:
      f(f16_t{});
      break;
    default:
      f(float{});
      break;
  }
}

}  // namespace keel::backend::cpu::KEEL_CPU_ISA
