// The integer dot kernels and activation quantizers written once over a tiny
// traits struct: the only difference between AVX2 and AVX-512 VNNI is how 32
// unsigned x signed byte products are added into eight int32 lanes (maddubs
// + madd, or vpdpbusd); both give lane j the bytes 4j .. 4j+3, the order
// quant_internal.h fixes. Included only by quant_avx2.cpp and
// quant_avx512.cpp; everything here sits in an unnamed namespace so the two
// ISA builds never meet at link time. Float sums use explicit fmas so no
// compiler contraction choice can make the levels differ.
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

// ((a0 + a4) + (a2 + a6)) + ((a1 + a5) + (a3 + a7)): the tree quant_internal.h fixes.
inline float hsum_f32(__m256 a) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline __m256i load32(const void* p) {
  return _mm256_loadu_si256(static_cast<const __m256i*>(p));
}

// Weight rows are streamed once per token from memory; the hardware
// prefetcher alone keeps too few lines in flight for the integer kernels
// (q8_0 decode-shaped matmul out of cache: 9.7-11.1 GB/s on 2 Zen 3 threads
// against 12.3-13.3 with this, distances 1.5-3 KiB alike; in cache no change).
inline constexpr int64_t kPrefetchBytes = 2048;

// Asks for the lines of [p + kPrefetchBytes, p + kPrefetchBytes + n).
inline void prefetch_ahead(const void* p, int64_t n) {
  const char* c = static_cast<const char*>(p) + kPrefetchBytes;
  for (int64_t o = 0; o < n; o += 64) _mm_prefetch(c + o, _MM_HINT_T0);
}

// Element j of a Q4_0 block in byte j, as a signed value q - 8.
inline __m256i unpack_q4(const uint8_t* qs) {
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m128i m = _mm_set1_epi8(0x0f);
  const __m128i lo = _mm_and_si128(v, m), hi = _mm_and_si128(_mm_srli_epi16(v, 4), m);
  return _mm256_sub_epi8(_mm256_set_m128i(hi, lo), _mm256_set1_epi8(8));
}

// Lane j += sum of a[i] * b[i] over bytes 4j .. 4j+3 (|a|, |b| <= 127), with
// ua = |a| precomputed: the sign trick moves a's sign onto b so the
// unsigned x signed instructions apply.
template <class D>
inline __m256i dot32(__m256i acc, __m256i a, __m256i ua, __m256i b) {
  return D::dot(acc, ua, _mm256_sign_epi8(b, a));
}

template <class D, int MR>
void dot_i8_rows(const int8_t* w, const int8_t* x, int64_t K, int32_t* out) {
  __m256i acc[MR];
  for (int m = 0; m < MR; ++m) acc[m] = _mm256_setzero_si256();
  int64_t k = 0;
  const auto step = [&](int64_t at) {
    const __m256i a = load32(w + at), ua = _mm256_sign_epi8(a, a);
    for (int m = 0; m < MR; ++m) acc[m] = dot32<D>(acc[m], a, ua, load32(x + m * K + at));
  };
  for (; k + 64 <= K; k += 64) {  // one cache line per iteration, one prefetch
    prefetch_ahead(w + k, 64);
    step(k);
    step(k + 32);
  }
  for (; k + 32 <= K; k += 32) step(k);
  for (int m = 0; m < MR; ++m) {
    int32_t s = hsum_i32(acc[m]);
    for (int64_t t = k; t < K; ++t) s += int32_t(w[t]) * int32_t(x[m * K + t]);
    out[m] = s;
  }
}

// The f16 scales of blocks r[0..8) widened to f32, in order.
template <class Block>
inline __m256 scales8(const Block* r) {
  return _mm256_cvtph_ps(_mm_setr_epi16(short(r[0].d), short(r[1].d), short(r[2].d), short(r[3].d),
                                        short(r[4].d), short(r[5].d), short(r[6].d),
                                        short(r[7].d)));
}

// Unpack: the weight block's 32 signed bytes (element e in byte e). The
// scale products d_w * d_x are formed eight blocks at a time (one f16
// widening, one multiply) and each block's taken out by a lane permute:
// per block that is one instruction where widening one f16 scale takes five.
template <class D, int MR, class Block, class Unpack>
void dot_blocked_rows(const Block* w, const BlockQ8_0* x, const float* xd, int64_t nb, float* out,
                      Unpack unpack) {
  __m256 acc[MR];
  for (int m = 0; m < MR; ++m) acc[m] = _mm256_setzero_ps();
  const auto block = [&](int64_t b, const __m256* d, int j) {
    const __m256i a = unpack(w[b]), ua = _mm256_sign_epi8(a, a);
    const __m256i lane = _mm256_set1_epi32(j);
    for (int m = 0; m < MR; ++m) {
      const __m256i p = dot32<D>(_mm256_setzero_si256(), a, ua, load32(x[m * nb + b].qs));
      acc[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_permutevar8x32_ps(d[m], lane), acc[m]);
    }
  };
  int64_t b = 0;
  for (; b + 8 <= nb; b += 8) {
    prefetch_ahead(w + b, int64_t(8 * sizeof(Block)));
    const __m256 dw = scales8(w + b);
    __m256 d[MR];
    for (int m = 0; m < MR; ++m) d[m] = _mm256_mul_ps(dw, _mm256_loadu_ps(xd + m * nb + b));
    for (int j = 0; j < 8; ++j) block(b + j, d, j);
  }
  for (; b < nb; ++b) {
    const __m256 dw = _mm256_set1_ps(_cvtsh_ss(w[b].d));
    __m256 d[MR];
    for (int m = 0; m < MR; ++m) d[m] = _mm256_mul_ps(dw, _mm256_set1_ps(xd[m * nb + b]));
    block(b, d, 0);
  }
  for (int m = 0; m < MR; ++m) out[m] = hsum_f32(acc[m]);
}

// Two adjacent weight rows (w and w + nb) against one x row, each in
// exactly dot_blocked_rows' order (so bit-identical to two M = 1 calls):
// two rows per pass share the x loads and the per-row overhead and keep two
// fma chains in flight. Used for Q4_0 only, whose unpacking makes batch-1
// decode compute-bound (out of cache +15-30%); Q8_0 is bound by memory, and
// two interleaved row streams read it slower than one (measured 11-14
// against 14-17 GB/s on 2 threads).
template <class D, class Block, class Unpack>
void dot_blocked_pair(const Block* w, const BlockQ8_0* x, const float* xd, int64_t nb, float* out,
                      Unpack unpack) {
  const Block* w1 = w + nb;
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  const auto block = [&](int64_t b, __m256 d0, __m256 d1, int j) {
    const __m256i xb = load32(x[b].qs), lane = _mm256_set1_epi32(j);
    const __m256i a0 = unpack(w[b]), a1 = unpack(w1[b]);
    const __m256i p0 = dot32<D>(_mm256_setzero_si256(), a0, _mm256_sign_epi8(a0, a0), xb);
    const __m256i p1 = dot32<D>(_mm256_setzero_si256(), a1, _mm256_sign_epi8(a1, a1), xb);
    acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p0), _mm256_permutevar8x32_ps(d0, lane), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p1), _mm256_permutevar8x32_ps(d1, lane), acc1);
  };
  int64_t b = 0;
  for (; b + 8 <= nb; b += 8) {
    prefetch_ahead(w + b, int64_t(8 * sizeof(Block)));
    prefetch_ahead(w1 + b, int64_t(8 * sizeof(Block)));
    const __m256 dx = _mm256_loadu_ps(xd + b);
    const __m256 d0 = _mm256_mul_ps(scales8(w + b), dx), d1 = _mm256_mul_ps(scales8(w1 + b), dx);
    for (int j = 0; j < 8; ++j) block(b + j, d0, d1, j);
  }
  for (; b < nb; ++b) {
    const __m256 dx = _mm256_set1_ps(xd[b]);
    block(b, _mm256_mul_ps(_mm256_set1_ps(_cvtsh_ss(w[b].d)), dx),
          _mm256_mul_ps(_mm256_set1_ps(_cvtsh_ss(w1[b].d)), dx), 0);
  }
  out[0] = hsum_f32(acc0);
  out[1] = hsum_f32(acc1);
}

// Calls f(std::integral_constant-like MR) for rows m0 .. m0+MR of M, MR <= kQRows.
template <template <int> class Rows, class... A>
void by_rows(int64_t M, A... args) {
  switch (M) {
    case 1:
      Rows<1>::run(args...);
      return;
    case 2:
      Rows<2>::run(args...);
      return;
    case 3:
      Rows<3>::run(args...);
      return;
    default:
      Rows<4>::run(args...);
      return;
  }
}

template <class D>
struct Kernels {
  template <int MR>
  struct I8 {
    static void run(const int8_t* w, const int8_t* x, int64_t K, int32_t* out) {
      dot_i8_rows<D, MR>(w, x, K, out);
    }
  };
  template <int MR>
  struct Q8 {
    static void run(const BlockQ8_0* w, const BlockQ8_0* x, const float* xd, int64_t nb,
                    float* out) {
      dot_blocked_rows<D, MR>(w, x, xd, nb, out, [](const BlockQ8_0& b) { return load32(b.qs); });
    }
  };
  template <int MR>
  struct Q4 {
    static void run(const BlockQ4_0* w, const BlockQ8_0* x, const float* xd, int64_t nb,
                    float* out) {
      dot_blocked_rows<D, MR>(w, x, xd, nb, out,
                              [](const BlockQ4_0& b) { return unpack_q4(b.qs); });
    }
  };

  static void dot_q4_pair(const BlockQ4_0* w, const BlockQ8_0* x, const float* xd, int64_t nb,
                          float* out) {
    dot_blocked_pair<D>(w, x, xd, nb, out, [](const BlockQ4_0& b) { return unpack_q4(b.qs); });
  }

  static void dot_i8(const int8_t* w, const int8_t* x, int64_t K, int64_t M, int32_t* out) {
    by_rows<I8>(M, w, x, K, out);
  }
  static void dot_q8(const BlockQ8_0* w, const BlockQ8_0* x, const float* xd, int64_t nb, int64_t M,
                     float* out) {
    by_rows<Q8>(M, w, x, xd, nb, out);
  }
  static void dot_q4(const BlockQ4_0* w, const BlockQ8_0* x, const float* xd, int64_t nb, int64_t M,
                     float* out) {
    by_rows<Q4>(M, w, x, xd, nb, out);
  }
};

// ---- activation quantizers (same arithmetic as the scalar ones: exact max,
// an IEEE division, round to nearest even, clamp to +-127)

inline __m256 abs_ps(__m256 v) {
  return _mm256_andnot_ps(_mm256_set1_ps(-0.f), v);
}

// round(x / d) clamped to +-127 as int32 lanes.
inline __m256i q_lanes(__m256 x, __m256 d) {
  __m256 r = _mm256_round_ps(_mm256_div_ps(x, d), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  r = _mm256_min_ps(_mm256_max_ps(r, _mm256_set1_ps(-127.f)), _mm256_set1_ps(127.f));
  return _mm256_cvtps_epi32(r);
}

// 32 values of x / d as int8 in order.
inline void q32(const float* x, __m256 d, int8_t* q) {
  __m256i i0 = q_lanes(_mm256_loadu_ps(x), d), i1 = q_lanes(_mm256_loadu_ps(x + 8), d),
          i2 = q_lanes(_mm256_loadu_ps(x + 16), d), i3 = q_lanes(_mm256_loadu_ps(x + 24), d);
  i0 = _mm256_packs_epi32(i0, i1);  // 0-3, 8-11, 4-7, 12-15 (per 128-bit half)
  i2 = _mm256_packs_epi32(i2, i3);
  i0 = _mm256_packs_epi16(i0, i2);  // 0-3, 8-11, 16-19, 24-27, 4-7, 12-15, 20-23, 28-31
  i0 = _mm256_permutevar8x32_epi32(i0, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(q), i0);
}

inline float amax32(const float* x) {
  __m256 m = _mm256_max_ps(
      _mm256_max_ps(abs_ps(_mm256_loadu_ps(x)), abs_ps(_mm256_loadu_ps(x + 8))),
      _mm256_max_ps(abs_ps(_mm256_loadu_ps(x + 16)), abs_ps(_mm256_loadu_ps(x + 24))));
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline int8_t q1(float x, float d) {
  float r = __builtin_nearbyintf(x / d);
  r = r < -127.f ? -127.f : (r > 127.f ? 127.f : r);
  return int8_t(r);
}

void quantize_q8_v(const float* x, BlockQ8_0* q, float* xd, int64_t nb) {
  for (int64_t b = 0; b < nb; ++b) {
    const float* xb = x + b * kQBlock;
    const float d = amax32(xb) / 127.f;
    q[b].d = f32_to_f16(d);
    xd[b] = _cvtsh_ss(q[b].d);
    if (d == 0.f) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q[b].qs), _mm256_setzero_si256());
      continue;
    }
    q32(xb, _mm256_set1_ps(d), q[b].qs);
  }
}

void quantize_i8_v(const float* x, int8_t* q, float* scale, int64_t K) {
  const int64_t K32 = K / 32 * 32;
  float amax = 0.f;
  for (int64_t k = 0; k < K32; k += 32) {
    const float m = amax32(x + k);
    amax = amax < m ? m : amax;
  }
  for (int64_t k = K32; k < K; ++k) {
    const float m = __builtin_fabsf(x[k]);
    amax = amax < m ? m : amax;
  }
  const float s = amax / 127.f;
  *scale = s;
  if (s == 0.f) {
    for (int64_t k = 0; k < K; ++k) q[k] = 0;
    return;
  }
  for (int64_t k = 0; k < K32; k += 32) q32(x + k, _mm256_set1_ps(s), q + k);
  for (int64_t k = K32; k < K; ++k) q[k] = q1(x[k], s);
}

template <class D>
const QDotTable& table() {
  static const QDotTable t{&Kernels<D>::dot_i8,      &Kernels<D>::dot_q8, &Kernels<D>::dot_q4,
                           &Kernels<D>::dot_q4_pair, &quantize_i8_v,      &quantize_q8_v};
  return t;
}

}  // namespace
}  // namespace keel::backend::cpu::quant_detail
