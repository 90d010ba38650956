// The bf16 attention forward's key tile in one pass: the scores of six keys at
// a time (vdpbf16ps), and while they are still in registers their
// probabilities against the row's running maximum, rounded to the key pairs
// of the P V product, their sums and their maximum. The exponentials then
// overlap the next keys' products instead of running as passes of their own.
#pragma once
#include "backend/cpu/cpu_tile_dot_bf16.h"

#if defined(__AVX512BF16__)
namespace keel::backend::cpu::KEEL_CPU_ISA {

// 2^x for x < 128 (-inf gives exactly 0) to a relative error of 7.5e-5, for
// probabilities that are rounded to bf16 (2^-9) before their products: a
// degree-3 polynomial (fitted to relative error on [-1/2, 1/2]) where
// exp2_nonpos_v takes degree 5, two fewer FMAs on the ports the products use.
inline __m512 exp2_bf16_v(__m512 x) {
  x = _mm512_max_ps(_mm512_set1_ps(-127.f), x);
  const __m512 magic = _mm512_set1_ps(12582912.f + 127.f);
  const __m512 t = _mm512_add_ps(x, magic);
  const __m512 f = _mm512_sub_ps(x, _mm512_sub_ps(t, magic));
  __m512 p =
      _mm512_fmadd_ps(_mm512_set1_ps(0.0551716573536396f), f, _mm512_set1_ps(0.24261115491390228f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.6932609677314758f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.9999280571937561f));
  return _mm512_mul_ps(p, Avx512::pow2_from_magic(t));
}

// 32 bf16 words x0..x15, y0..y15 as the 16 pairs (x_r, y_r) vdpbf16ps takes.
inline __m512i interleave_bf16_halves(__m512i w) {
  alignas(64) static constexpr uint16_t kInterleave[32] = {
      0, 16, 1, 17, 2,  18, 3,  19, 4,  20, 5,  21, 6,  22, 7,  23,
      8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
  return _mm512_permutexvar_epi16(_mm512_load_si512(kInterleave), w);
}

// Word r: (bf16(lo[r]), bf16(hi[r])), nearest even: two key rows of f32
// probabilities as the pairs vdpbf16ps takes, in one rounding and one shuffle.
inline __m512i bf16_pair_words(__m512 lo, __m512 hi) {
  return interleave_bf16_halves((__m512i)_mm512_cvtne2ps_pbh(hi, lo));
}

// The running state of one 64-lane query tile through a key tile: the base-2
// shift -m of each lane (scale log2(e) folded in by sc), the lane sums of P in
// key order and the lane maxima of the raw scores.
struct SoftmaxLanes {
  alignas(64) float neg_m[64];
  alignas(64) float sum[64];
  alignas(64) float max[64];
};

// Keys [j, j + R) (R even) against the 64 query lanes of Qt (H2 pair rows of
// 64 words): s = k . q, P = 2^(sc s - m), written as R / 2 pair rows of pp.
template <int R>
inline void score_softmax_block(const uint32_t* kc, int64_t H2, const uint32_t* Qt, __m512 sc,
                                SoftmaxLanes& st, uint32_t* pp) {
  static_assert(R % 2 == 0);
  __m512 c[R][4];
  for (int i = 0; i < R; ++i)
    for (int v = 0; v < 4; ++v) c[i][v] = _mm512_setzero_ps();
  for (int64_t k = 0; k < H2; ++k) {
    __m512bh b[4];
    for (int v = 0; v < 4; ++v) b[v] = (__m512bh)_mm512_loadu_si512(Qt + k * 64 + v * 16);
    for (int i = 0; i < R; ++i) {
      const __m512bh a = (__m512bh)_mm512_set1_epi32(int(kc[i * H2 + k]));
      for (int v = 0; v < 4; ++v) c[i][v] = _mm512_dpbf16_ps(c[i][v], a, b[v]);
    }
  }
  for (int v = 0; v < 4; ++v) {
    const __m512 nm = _mm512_load_ps(st.neg_m + 16 * v);
    __m512 s = _mm512_load_ps(st.sum + 16 * v), mx = _mm512_load_ps(st.max + 16 * v);
    for (int i = 0; i < R; i += 2) {
      const __m512 e0 = exp2_bf16_v(_mm512_fmadd_ps(c[i][v], sc, nm));
      const __m512 e1 = exp2_bf16_v(_mm512_fmadd_ps(c[i + 1][v], sc, nm));
      s = _mm512_add_ps(_mm512_add_ps(s, e0), e1);
      mx = _mm512_max_ps(mx, _mm512_max_ps(c[i][v], c[i + 1][v]));
      _mm512_store_si512(pp + i / 2 * 64 + 16 * v, bf16_pair_words(e0, e1));
    }
    _mm512_store_ps(st.sum + 16 * v, s);
    _mm512_store_ps(st.max + 16 * v, mx);
  }
}

// A whole key tile of jb keys (jb even) from kc (rows of H2 words) in blocks
// of six, then the remainder; st.sum and st.max carry on from their values.
inline void score_softmax_tile(int64_t jb, const uint32_t* kc, int64_t H2, const uint32_t* Qt,
                               __m512 sc, SoftmaxLanes& st, uint32_t* pp) {
  int64_t j = 0;
  for (; j + 6 <= jb; j += 6) score_softmax_block<6>(kc + j * H2, H2, Qt, sc, st, pp + j / 2 * 64);
  if (jb - j == 4) score_softmax_block<4>(kc + j * H2, H2, Qt, sc, st, pp + j / 2 * 64);
  if (jb - j == 2) score_softmax_block<2>(kc + j * H2, H2, Qt, sc, st, pp + j / 2 * 64);
}

}  // namespace keel::backend::cpu::KEEL_CPU_ISA
#endif
