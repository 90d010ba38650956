// The bf16 attention forward's key tile in one pass: the scores of six keys at
// a time (vdpbf16ps) and, while they are still in registers, their
// probabilities against the row's running maximum as it stands, rounded to
// the key pairs of the P V product, their sums and their maximum. No pass
// over the tile for its maximum and no rescale of the accumulator remain.
#pragma once
#include <type_traits>

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

// Keys [j, j + R) of a key tile against its 64 query lanes: c[i][v] = the
// dot products of key row j + i of A (H2 words each) with lanes 16 v .. 16 v
// + 15 of B (H2 pair rows of 64 words), handed to ep(c, R, j) while they are
// still in registers.
template <int R, class Ep>
inline void key_block_dot(int64_t j, const uint32_t* A, int64_t H2, const uint32_t* B, Ep& ep) {
  __m512 c[R][4];
  for (int i = 0; i < R; ++i)
    for (int v = 0; v < 4; ++v) c[i][v] = _mm512_setzero_ps();
  const uint32_t* a0 = A + j * H2;
  for (int64_t k = 0; k < H2; ++k) {
    __m512bh b[4];
    for (int v = 0; v < 4; ++v) b[v] = (__m512bh)_mm512_loadu_si512(B + k * 64 + v * 16);
    for (int i = 0; i < R; ++i) {
      const __m512bh a = (__m512bh)_mm512_set1_epi32(int(a0[i * H2 + k]));
      for (int v = 0; v < 4; ++v) c[i][v] = _mm512_dpbf16_ps(c[i][v], a, b[v]);
    }
  }
  ep(c, std::integral_constant<int, R>{}, j);
}

// key_block_dot over keys [0, jb) (jb even) in blocks of six, then the rest,
// so that every block holds whole key pairs.
template <class Ep>
inline void key_tile_dot(int64_t jb, const uint32_t* A, int64_t H2, const uint32_t* B, Ep&& ep) {
  int64_t j = 0;
  for (; j + 6 <= jb; j += 6) key_block_dot<6>(j, A, H2, B, ep);
  if (jb - j == 4) key_block_dot<4>(j, A, H2, B, ep);
  if (jb - j == 2) key_block_dot<2>(j, A, H2, B, ep);
}

// The running state of one 64-lane query tile through a key tile: the base-2
// shift -m of each lane (scale log2(e) folded in by sc), the lane sums of P in
// key order and the lane maxima of the raw scores.
struct SoftmaxLanes {
  alignas(64) float neg_m[64];
  alignas(64) float sum[64];
  alignas(64) float max[64];
};

// A forward key tile of jb keys (jb even) from kc (rows of H2 words) against
// the query lanes of Qt: s = k . q, P = 2^(sc s - m) written as jb / 2 pair
// rows of pp (64 words each); st.sum and st.max carry on from their values.
inline void score_softmax_tile(int64_t jb, const uint32_t* kc, int64_t H2, const uint32_t* Qt,
                               __m512 sc, SoftmaxLanes& st, uint32_t* pp) {
  key_tile_dot(jb, kc, H2, Qt, [&](auto& c, auto r, int64_t j) {
    constexpr int R = decltype(r)::value;
    for (int v = 0; v < 4; ++v) {
      const __m512 nm = _mm512_load_ps(st.neg_m + 16 * v);
      __m512 s = _mm512_load_ps(st.sum + 16 * v), mx = _mm512_load_ps(st.max + 16 * v);
      for (int i = 0; i < R; i += 2) {
        const __m512 e0 = exp2_bf16_v(_mm512_fmadd_ps(c[i][v], sc, nm));
        const __m512 e1 = exp2_bf16_v(_mm512_fmadd_ps(c[i + 1][v], sc, nm));
        s = _mm512_add_ps(_mm512_add_ps(s, e0), e1);
        mx = _mm512_max_ps(mx, _mm512_max_ps(c[i][v], c[i + 1][v]));
        _mm512_store_si512(pp + (j + i) / 2 * 64 + 16 * v, bf16_pair_words(e0, e1));
      }
      _mm512_store_ps(st.sum + 16 * v, s);
      _mm512_store_ps(st.max + 16 * v, mx);
    }
  });
}

}  // namespace keel::backend::cpu::KEEL_CPU_ISA
#endif
