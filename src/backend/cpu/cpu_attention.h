// Causal grouped-query attention, flash style, as tiled matrix products: per
// (query block of kTileQ rows) x (key block of kTileK keys) the scores
// S^T = K Q^T (queries along the vector lanes, so the softmax statistics of
// all rows update with plain vector ops), an online softmax on the tile, and
// O += P V, both through tile_gemm's register-blocked kernel. No Tq x Tk
// matrix exists; key blocks wholly in a row block's future are skipped and
// only blocks that cross the diagonal are masked, and their masked corners are
// not multiplied (TileTrim). Scores are kept in base 2 (log2(e) folded into
// the query scale) so each probability costs one exp2_nonpos_v. The forward
// saves lse (natural log); the backward recomputes P from it. Forward work items are (b, h, query
// block); backward items are (b, kv head), which own their dk/dv rows outright, so query heads
// sharing a kv head never race and every sum has a fixed order.
#pragma once
#include <cfloat>
#include <type_traits>

#include "backend/cpu/cpu_attention_decode.h"
#include "backend/cpu/cpu_attention_rows.h"
#include "backend/cpu/cpu_attention_softmax_tile.h"
#include "backend/cpu/cpu_tile_dot_bf16.h"
#include "backend/cpu/cpu_tile_gemm.h"
#include "backend/cpu/cpu_tile_scratch.h"
#include "backend/cpu/simd.h"
#include "core/cpu_features.h"

namespace keel::backend::cpu::KEEL_CPU_ISA {

inline constexpr int64_t kTileQ = 64;
inline constexpr int64_t kTileK = 64;
// Keys per tile on the bf16 pair path, whose products are twice as fast: 128
// halves the per-tile work of the softmax bookkeeping (measured +8-15% there,
// no gain in f32).
inline constexpr int64_t kTileKDot = 128;
// How far (base 2) a score may pass its row's running maximum before the
// forward's one-pass tile gives way to the rescaling one: P <= 2^8 keeps
// every sum far inside f32.
inline constexpr float kStaleMaxExcess = 8.f;
// Below this many query rows the forward takes the row-at-a-time path.
inline constexpr int64_t kTiledMinQueries = 16;
inline constexpr float kLog2e = 1.44269504088896341f;
inline constexpr float kLn2 = 0.693147180559945309f;

// The attention kernels' per-thread scratch.
inline TileScratch& tile_scratch() {
  thread_local TileScratch s;
  return s;
}

// Rows [0, n) of a (rows x HS) matrix in storage type T, as f32 rows with a
// row stride: T = float is used in place, 16-bit types are widened into buf.
struct F32Rows {
  const float* p;
  int64_t ld;
};
template <class S, class T>
inline F32Rows f32_rows(const T* base, int64_t row_stride, int64_t n, int64_t HS, float* buf) {
  if constexpr (std::is_same_v<T, float>) {
    (void)n, (void)HS, (void)buf;
    return {base, row_stride};
  } else {
    for (int64_t j = 0; j < n; ++j) load_row<S>(base + j * row_stride, 1.f, buf + j * HS, HS);
    return {buf, HS};
  }
}

#if defined(__AVX512F__)
// x = the first w (<= 16) floats at p, zero past them.
inline void load_first(__m512& x, const float* p, int64_t w) {
  x = _mm512_maskz_loadu_ps(__mmask16((1u << w) - 1u), p);
}
// x[c] = column c of the 16 x 16 matrix whose row r is x[r].
inline void transpose_square(__m512 x[16]) {
  __m512i w[16];
  for (int i = 0; i < 16; ++i) w[i] = _mm512_castps_si512(x[i]);
  transpose_words_16x16(w);
  for (int i = 0; i < 16; ++i) x[i] = _mm512_castsi512_ps(w[i]);
}
#endif
#if defined(__AVX2__)
inline void load_first(__m256& x, const float* p, int64_t w) {
  x = _mm256_maskload_ps(
      p, _mm256_cmpgt_epi32(_mm256_set1_epi32(int(w)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
}
// The same for 8 x 8: pairs, then quads, then 128-bit halves.
inline void transpose_square(__m256 x[8]) {
  __m256 y[8], z[8];
  for (int i = 0; i < 4; ++i) {
    y[2 * i] = _mm256_unpacklo_ps(x[2 * i], x[2 * i + 1]);
    y[2 * i + 1] = _mm256_unpackhi_ps(x[2 * i], x[2 * i + 1]);
  }
  for (int i = 0; i < 2; ++i) {
    z[4 * i + 0] = _mm256_shuffle_ps(y[4 * i], y[4 * i + 2], 0x44);
    z[4 * i + 1] = _mm256_shuffle_ps(y[4 * i], y[4 * i + 2], 0xEE);
    z[4 * i + 2] = _mm256_shuffle_ps(y[4 * i + 1], y[4 * i + 3], 0x44);
    z[4 * i + 3] = _mm256_shuffle_ps(y[4 * i + 1], y[4 * i + 3], 0xEE);
  }
  for (int i = 0; i < 4; ++i) {
    x[i] = _mm256_permute2f128_ps(z[i], z[4 + i], 0x20);
    x[4 + i] = _mm256_permute2f128_ps(z[i], z[4 + i], 0x31);
  }
}
#endif

// out[d * ld + r] = scale * f32(row r at base + r * stride)[d] for d < HS and
// r < n; with f32 rows on AVX2 or AVX-512, lanes n .. (n rounded up to the
// vector width) - 1 get zero. A tile's queries (or dO) along the lanes, as
// the B operand of its scores: W x W transposes in registers where one
// scattered 4-byte store per element took about a fifth of the forward's
// time outside its products.
template <class S, class T>
inline void transpose_scaled_rows(const T* base, int64_t stride, int64_t n, int64_t HS, float scale,
                                  float* out, int64_t ld) {
  if constexpr (S::W > 1 && std::is_same_v<T, float>) {
    constexpr int W = S::W;
    const auto sc = S::set1(scale);
    for (int64_t r0 = 0; r0 < n; r0 += W)
      for (int64_t c = 0; c < HS; c += W) {
        const int64_t w = imin(HS - c, W);
        typename S::V x[W];
        for (int i = 0; i < W; ++i) {
          x[i] = S::zero();
          if (r0 + i < n) load_first(x[i], base + (r0 + i) * stride + c, w);
        }
        transpose_square(x);
        for (int i = 0; i < w; ++i) S::store(out + (c + i) * ld + r0, S::mul(x[i], sc));
      }
  } else {
    for (int64_t r = 0; r < n; ++r)
      for (int64_t d = 0; d < HS; ++d)
        out[d * ld + r] = Scalar::load(base + r * stride + d) * scale;
  }
}

// Asks for n rows of `bytes` bytes each (rows row_stride elements of T apart)
// to be brought into the cache for writing: a query tile's dq rows, read and
// added to at the tile's end, are a wide stride apart and otherwise arrive
// one miss at a time (bf16 backward 2-3% faster; no change measured in f32).
template <class T>
inline void prefetch_rows_for_write(T* base, int64_t row_stride, int64_t n, int64_t bytes) {
  for (int64_t r = 0; r < n; ++r) {
    const char* row = reinterpret_cast<const char*>(base + r * row_stride);
    for (int64_t o = 0; o < bytes; o += 64) __builtin_prefetch(row + o, 1, 3);
  }
}

// First query lane of row block t0 that may see key `key`: lanes below it are
// masked (row t sees keys < Tk - Tq + t + 1).
inline int64_t first_seeing_lane(const AttentionArgs& a, int64_t t0, int64_t key) {
  return key - (a.Tk - a.Tq) - t0;
}

// Lanes r < first_seeing_lane of each key row j of a (jb x ld) tile get value
// x; returns whether any lane was masked.
inline bool mask_tile(const AttentionArgs& a, int64_t t0, int64_t j0, int64_t jb, int64_t nq,
                      float* tile, int64_t ld, float x) {
  bool any = false;
  for (int64_t j = 0; j < jb; ++j) {
    const int64_t lim = imin(imax(first_seeing_lane(a, t0, j0 + j), 0), nq);
    for (int64_t r = 0; r < lim; ++r) tile[j * ld + r] = x;
    any |= lim > 0;
  }
  return any;
}

// Whether a key block [j0, j0 + jb) is visible to every row of the block at t0.
inline bool tile_unmasked(const AttentionArgs& a, int64_t t0, int64_t j0, int64_t jb) {
  return first_seeing_lane(a, t0, j0 + jb - 1) <= 0;
}

// Whether the bf16 pair products apply: the CPU has AVX512-BF16, the scale is
// positive (the forward takes the maximum of unscaled scores), HS is a
// whole number of 16-lane vectors of pairs (pairs along the head dimension, N
// of the products along it), rows of 4-byte words start at even elements, and
// a head fits the backward's row buffer.
inline bool bf16_dot_usable(const AttentionArgs& a) {
  return cpu_features().avx512_bf16 && a.scale > 0 && a.HS % 32 == 0 && a.HS <= 512 &&
         a.kv_row_stride % 2 == 0 && a.q_row_stride % 2 == 0 && a.kv_batch_stride % 2 == 0 &&
         a.q_batch_stride % 2 == 0;
}

// dst row r (rows row_stride apart) += scale * src row r (HS floats each),
// for n rows: the backward's write-back of a query tile's dQ.
template <class S, class T>
inline void add_scaled_rows(T* dst, int64_t row_stride, const float* src, int64_t n, int64_t HS,
                            float scale) {
  for (int64_t r = 0; r < n; ++r) {
    T* dr = dst + r * row_stride;
    const float* sr = src + r * HS;
    vec_loop<S>(0, HS, [&](auto ll, int64_t d) {
      using L = decltype(ll);
      L::store(dr + d, L::fma(L::set1(scale), L::load(sr + d), L::load(dr + d)));
    });
  }
}

// The epilogue of a forward query block: o[t] = acc[r] / l[r] and the
// log-sum-exp, in natural log, from the base-2 running max m (a row that
// sees no key gets o = 0 and lse = -inf).
template <class S, class T>
inline void finish_query_rows(const AttentionArgs& a, int64_t b, int64_t h, int64_t t0, int64_t nq,
                              const float* acc, const float* l, const float* m, T* o, float* lse) {
  const int64_t HS = a.HS;
  for (int64_t r = 0; r < nq; ++r) {
    const int64_t t = t0 + r;
    const bool any = visible_keys(a, t) > 0;
    T* orow = o + ((b * a.Tq + t) * a.NH + h) * HS;
    const float inv = any ? 1.f / l[r] : 0.f;
    const float* ar = acc + r * HS;
    vec_loop<S>(0, HS, [&](auto ll, int64_t d) {
      using L = decltype(ll);
      L::store(orow + d, L::mul(L::load(ar + d), L::set1(inv)));
    });
    lse[(b * a.NH + h) * a.Tq + t] = any ? m[r] * kLn2 + std::log(l[r]) : -INFINITY;
  }
}

template <class S, class T>
void attention_fwd_tiled(const AttentionArgs& a, const T* q, const T* k, const T* v, T* o,
                         float* lse, int threads) {
  const int64_t HS = a.HS, group = a.NH / a.NKV;
  const int64_t nqb = (a.Tq + kTileQ - 1) / kTileQ;
  const float qscale = a.scale * kLog2e;
  parallel_items(a.B * a.NH * nqb, threads, [&](int64_t item) {
    const int64_t qb = item % nqb, h = (item / nqb) % a.NH, b = item / (nqb * a.NH);
    const int64_t kvh = h / group;
    const int64_t t0 = qb * kTileQ, nq = imin(a.Tq - t0, kTileQ);
    const T* kb = k + b * a.kv_batch_stride + kvh * HS;
    const T* vb = v + b * a.kv_batch_stride + kvh * HS;
    // Qt (HS x kTileQ): queries times scale * log2(e), rows along the lanes. acc (nq x HS).
    // pt (kTileK x kTileQ): a one-pass tile's P, beside its raw scores in st.
    float* buf[6];
    tile_scratch().carve(
        {HS * kTileQ, kTileQ * HS, kTileK * kTileQ, kTileK * HS, kTileK * HS, kTileK * kTileQ},
        buf);
    float *Qt = buf[0], *acc = buf[1], *st = buf[2], *kbuf = buf[3], *vbuf = buf[4], *pt = buf[5];
    alignas(64) float m[kTileQ], l[kTileQ], corr[kTileQ], bm[kTileQ], ls[kTileQ];
    transpose_scaled_rows<S>(q + b * a.q_batch_stride + t0 * a.q_row_stride + h * HS,
                             a.q_row_stride, nq, HS, qscale, Qt, kTileQ);
    for (int64_t r = 0; r < nq; ++r) m[r] = -FLT_MAX, l[r] = 0.f;
    for (int64_t i = 0; i < nq * HS; ++i) acc[i] = 0.f;
    const int64_t nk = visible_keys(a, t0 + nq - 1);
    for (int64_t j0 = 0; j0 < nk; j0 += kTileK) {
      const int64_t jb = imin(nk - j0, kTileK);
      // st[j, r] = scale log2(e) q_r . k_j; the masked corner is not computed.
      const bool crosses = !tile_unmasked(a, t0, j0, jb);
      const int64_t shift = first_seeing_lane(a, t0, j0);
      const TileTrim cols = crosses ? TileTrim{TileTrim::Cols, shift} : TileTrim{};
      const F32Rows K = f32_rows<S>(kb + j0 * a.kv_row_stride, a.kv_row_stride, jb, HS, kbuf);
      tile_gemm<S>(jb, nq, HS, K.p, K.ld, 1, Qt, kTileQ, st, kTileQ, false, nullptr, cols);
      const F32Rows V = f32_rows<S>(vb + j0 * a.kv_row_stride, a.kv_row_stride, jb, HS, vbuf);
      // Past the first tile every lane has a maximum m. A tile no lane's mask
      // touches takes P = 2^(s - m) against m as it stands, its sums and its
      // maximum in one pass, with no rescale of acc, while no score passes m
      // by more than kStaleMaxExcess (P <= 2^8); otherwise it is redone below
      // from the raw scores, which stay in st.
      if (j0 > 0 && !crosses) {
        bool within = true;
        vec_loop<S>(0, nq, [&](auto ll, int64_t r) {
          using L = decltype(ll);
          const auto sh = L::load(m + r);
          auto s = L::load(l + r), x = L::set1(-INFINITY);
          for (int64_t j = 0; j < jb; ++j) {
            const auto v = L::load(st + j * kTileQ + r);
            x = L::max(x, v);
            const auto e = exp2_nonpos_v<L>(L::sub(v, sh));
            L::store(pt + j * kTileQ + r, e);
            s = L::add(s, e);
          }
          L::store(ls + r, s);
          L::store(bm + r, L::sub(x, sh));
        });
        for (int64_t r = 0; r < nq; ++r) within &= bm[r] <= kStaleMaxExcess;
        if (within) {
          std::memcpy(l, ls, size_t(nq) * sizeof(float));
          tile_gemm<S>(nq, HS, jb, pt, 1, kTileQ, V.p, V.ld, acc, HS, true);
          continue;
        }
      }
      // Masked scores become -inf, whose exp2 below is exactly 0.
      if (crosses) mask_tile(a, t0, j0, jb, nq, st, kTileQ, -INFINITY);
      // m starts at -FLT_MAX, not -inf, so a row that has seen no key yet
      // (all its lanes masked to -inf) still has corr = exp2(0) = 1.
      vec_loop<S>(0, nq, [&](auto ll, int64_t r) {
        using L = decltype(ll);
        auto x = L::set1(-INFINITY);
        for (int64_t j = 0; j < jb; ++j) x = L::max(x, L::load(st + j * kTileQ + r));
        const auto m_old = L::load(m + r), m_new = L::max(m_old, x);
        L::store(corr + r, exp2_nonpos_v<L>(L::sub(m_old, m_new)));
        L::store(m + r, m_new);
      });
      bool rescale = false;
      for (int64_t r = 0; r < nq; ++r) rescale |= corr[r] != 1.f;
      // l = l * corr + the tile's P summed in key order.
      vec_loop<S>(0, nq, [&](auto ll, int64_t r) {
        using L = decltype(ll);
        const auto sh = L::load(m + r);
        auto s = L::mul(L::load(l + r), L::load(corr + r));
        for (int64_t j = 0; j < jb; ++j) {
          float* p = st + j * kTileQ + r;
          const auto e = exp2_nonpos_v<L>(L::sub(L::load(p), sh));
          L::store(p, e);
          s = L::add(s, e);
        }
        L::store(l + r, s);
      });
      // acc[r, :] = corr[r] acc[r, :] + sum_j P[r, j] v_j, P[r, j] read from
      // st[j, r]; keys in row r's future (P = 0) are not visited.
      const TileTrim to = crosses ? TileTrim{TileTrim::KTo, -shift} : TileTrim{};
      tile_gemm<S>(nq, HS, jb, st, 1, kTileQ, V.p, V.ld, acc, HS, true, rescale ? corr : nullptr,
                   to);
    }
    finish_query_rows<S>(a, b, h, t0, nq, acc, l, m, o, lse);
  });
}

// With P = exp(S - lse), S = scale Q K^T, D = rowsum(dO * O):
// dV += P^T dO, dP = dO V^T, dS = P * (dP - D), dQ += scale dS K,
// dK += scale dS^T Q. Per (b, kv head): every query block of every head of the
// group in order, each over its visible key blocks; dK and dV sum in f32 over
// the whole head, dQ per query block. S and lse are taken in base 2 for exp2.
template <class S, class T>
void attention_bwd_t(const AttentionArgs& a, const T* dout, const T* q, const T* k, const T* v,
                     const T* o, const float* lse, T* dq, T* dk, T* dv, int threads) {
  const int64_t HS = a.HS, group = a.NH / a.NKV, Tk = a.Tk;
  const int64_t nqb = (a.Tq + kTileQ - 1) / kTileQ;
  parallel_items(a.B * a.NKV, threads, [&](int64_t item) {
    const int64_t kvh = item % a.NKV, b = item / a.NKV;
    const int64_t kv_off = b * a.kv_batch_stride + kvh * HS;
    // Kf, Vf, dKf, dVf: (Tk x HS) f32. Qs, dOr, dQa: (kTileQ x HS) rows;
    // Qt, dOt: (HS x kTileQ) with queries along the lanes; st, dpt: (kTileK x kTileQ).
    float* buf[11];
    tile_scratch().carve({Tk * HS, Tk * HS, Tk * HS, Tk * HS, kTileQ * HS, kTileQ * HS, kTileQ * HS,
                          HS * kTileQ, HS * kTileQ, kTileK * kTileQ, kTileK * kTileQ},
                         buf);
    float *Kf = buf[0], *Vf = buf[1], *dKf = buf[2], *dVf = buf[3], *Qs = buf[4], *dOr = buf[5],
          *dQa = buf[6], *Qt = buf[7], *dOt = buf[8], *st = buf[9], *dpt = buf[10];
    alignas(64) float lr[kTileQ], Dr[kTileQ];
    for (int64_t j = 0; j < Tk; ++j) {
      load_row<S>(k + kv_off + j * a.kv_row_stride, 1.f, Kf + j * HS, HS);
      load_row<S>(v + kv_off + j * a.kv_row_stride, 1.f, Vf + j * HS, HS);
    }
    for (int64_t i = 0; i < Tk * HS; ++i) dKf[i] = dVf[i] = 0.f;
    for (int64_t hg = 0; hg < group; ++hg) {
      const int64_t h = kvh * group + hg;
      for (int64_t qb = 0; qb < nqb; ++qb) {
        const int64_t t0 = qb * kTileQ, nq = imin(a.Tq - t0, kTileQ);
        const int64_t nk = visible_keys(a, t0 + nq - 1);
        if (nk <= 0) continue;
        for (int64_t r = 0; r < nq; ++r) {
          const int64_t t = t0 + r;
          const int64_t q_off = b * a.q_batch_stride + t * a.q_row_stride + h * HS;
          const int64_t o_off = ((b * a.Tq + t) * a.NH + h) * HS;
          float* qs = Qs + r * HS;
          float* dor = dOr + r * HS;
          load_row<S>(q + q_off, a.scale, qs, HS);
          load_row<S>(dout + o_off, 1.f, dor, HS);
          Dr[r] = dot_row<S>(dor, o + o_off, HS);
          lr[r] = lse[(b * a.NH + h) * a.Tq + t] * kLog2e;
        }
        transpose_scaled_rows<S>(Qs, HS, nq, HS, kLog2e, Qt, kTileQ);
        transpose_scaled_rows<S>(dOr, HS, nq, HS, 1.f, dOt, kTileQ);
        for (int64_t i = 0; i < nq * HS; ++i) dQa[i] = 0.f;
        for (int64_t j0 = 0; j0 < nk; j0 += kTileK) {
          const int64_t jb = imin(nk - j0, kTileK);
          const float* Kj = Kf + j0 * HS;
          const float* Vj = Vf + j0 * HS;
          // Lanes a crossing tile's mask covers are left uncomputed in S^T and
          // dP^T and zeroed in P and dS; the products after skip them too.
          const bool crosses = !tile_unmasked(a, t0, j0, jb);
          const int64_t shift = first_seeing_lane(a, t0, j0);
          const TileTrim cols = crosses ? TileTrim{TileTrim::Cols, shift} : TileTrim{};
          tile_gemm<S>(jb, nq, HS, Kj, HS, 1, Qt, kTileQ, st, kTileQ, false, nullptr, cols);  // S^T
          tile_gemm<S>(jb, nq, HS, Vj, HS, 1, dOt, kTileQ, dpt, kTileQ, false, nullptr, cols);
          // P and dS in one pass, then both zeroed where masked.
          for (int64_t j = 0; j < jb; ++j)
            vec_loop<S>(0, nq, [&](auto ll, int64_t r) {
              using L = decltype(ll);
              float* p = st + j * kTileQ + r;
              float* ds = dpt + j * kTileQ + r;
              const auto e = exp2_nonpos_v<L>(L::sub(L::load(p), L::load(lr + r)));
              L::store(p, e);
              L::store(ds, L::mul(e, L::sub(L::load(ds), L::load(Dr + r))));
            });
          if (crosses) {
            mask_tile(a, t0, j0, jb, nq, st, kTileQ, 0.f);
            mask_tile(a, t0, j0, jb, nq, dpt, kTileQ, 0.f);
          }
          // dV[j] += sum_r P[r, j] dO[r]; dK[j] += sum_r dS[r, j] (scale q_r).
          const TileTrim from = crosses ? TileTrim{TileTrim::KFrom, shift} : TileTrim{};
          tile_gemm<S>(jb, HS, nq, st, kTileQ, 1, dOr, HS, dVf + j0 * HS, HS, true, nullptr, from);
          tile_gemm<S>(jb, HS, nq, dpt, kTileQ, 1, Qs, HS, dKf + j0 * HS, HS, true, nullptr, from);
          // dQ[r] += sum_j dS[r, j] k_j
          tile_gemm<S>(nq, HS, jb, dpt, 1, kTileQ, Kj, HS, dQa, HS, true, nullptr,
                       crosses ? TileTrim{TileTrim::KTo, -shift} : TileTrim{});
        }
        add_scaled_rows<S>(dq + b * a.q_batch_stride + t0 * a.q_row_stride + h * HS, a.q_row_stride,
                           dQa, nq, HS, a.scale);
      }
    }
    for (int64_t j = 0; j < Tk; ++j) {
      T* dkr = dk + kv_off + j * a.kv_row_stride;
      T* dvr = dv + kv_off + j * a.kv_row_stride;
      const float* dka = dKf + j * HS;
      const float* dva = dVf + j * HS;
      vec_loop<S>(0, HS, [&](auto ll, int64_t d) {
        using L = decltype(ll);
        L::store(dkr + d, L::add(L::load(dka + d), L::load(dkr + d)));
        L::store(dvr + d, L::add(L::load(dva + d), L::load(dvr + d)));
      });
    }
  });
}

#if defined(__AVX512BF16__)
// Per calling thread scratch for buffers all workers share within one call.
inline constexpr int64_t kPackedKvFloats = int64_t(8) << 20;  // 32 MiB
inline TileScratch& call_scratch() {
  thread_local TileScratch s;
  return s;
}

// rows of n bf16 (n even) at base + j * stride, back to back as 32-bit words.
inline void copy_rows(const bf16_t* base, int64_t stride, int64_t rows, int64_t n, uint32_t* out) {
  for (int64_t j = 0; j < rows; ++j)
    std::memcpy(out + j * (n / 2), base + j * stride, size_t(n) * 2);
}

// The forward for bf16 storage on AVX512-BF16: both products as vdpbf16ps on
// bf16 pairs (tile_dot_bf16), q and k as stored, V packed into key pairs once
// per call, P rounded to bf16 before P V (l sums P before rounding). The first
// key tile, a tile the diagonal crosses and a tile whose scores pass the
// running maximum by more than kStaleMaxExcess take two passes: one
// read-only pass finds the maximum of the raw scores, and one turns them into
// probabilities (the scale folded into the exp2's argument), sums them and
// writes them as the pairs of the P V product. Every other tile takes the one
// pass of score_softmax_tile. All kTileQ lanes are worked; padding lanes hold
// zero queries and are never written out.
template <class S>
void attention_fwd_dot(const AttentionArgs& a, const bf16_t* q, const bf16_t* k, const bf16_t* v,
                       bf16_t* o, float* lse, int threads) {
  const int64_t HS = a.HS, H2 = HS / 2, group = a.NH / a.NKV;
  const int64_t nqb = (a.Tq + kTileQ - 1) / kTileQ, Tk2 = (a.Tk + 1) / 2;
  constexpr int64_t TK = kTileKDot;
  // Vp: V as key pairs; Kc: K's rows of one head back to back (the scores'
  // broadcasts then walk a few adjacent lines instead of rows a token's width
  // apart: measured 354 -> 420 GFLOP/s for that product).
  // Batches go in slices whose packed K and V fit kPackedKvFloats (a long
  // prefill of a large batch would otherwise hold a second copy of its cache).
  const int64_t per_batch = a.NKV * (Tk2 * HS + a.Tk * H2);
  const int64_t nb = imax(1, imin(a.B, kPackedKvFloats / imax(per_batch, 1)));
  const __m512 sc = _mm512_set1_ps(a.scale * kLog2e);
  for (int64_t b0 = 0; b0 < a.B; b0 += nb) {
    const int64_t bn = imin(nb, a.B - b0);
    float* shared[2];
    call_scratch().carve({bn * a.NKV * Tk2 * HS, bn * a.NKV * a.Tk * H2}, shared);
    auto* Vp = reinterpret_cast<uint32_t*>(shared[0]);
    auto* Kc = reinterpret_cast<uint32_t*>(shared[1]);
    parallel_items(bn * a.NKV, threads, [&](int64_t item) {
      const int64_t kvh = item % a.NKV, b = b0 + item / a.NKV;
      const int64_t off = b * a.kv_batch_stride + kvh * HS;
      pack_bf16_pairs(v + off, a.kv_row_stride, a.Tk, HS, Vp + item * Tk2 * HS);
      copy_rows(k + off, a.kv_row_stride, a.Tk, HS, Kc + item * a.Tk * H2);
    });
    parallel_items(bn * a.NH * nqb, threads, [&](int64_t item) {
      const int64_t qb = item % nqb, h = (item / nqb) % a.NH, bs = item / (nqb * a.NH);
      const int64_t b = b0 + bs, kvh = h / group;
      const int64_t t0 = qb * kTileQ, nq = imin(a.Tq - t0, kTileQ);
      const uint32_t* kc = Kc + (bs * a.NKV + kvh) * a.Tk * H2;
      const uint32_t* vp = Vp + (bs * a.NKV + kvh) * Tk2 * HS;
      // Qt: (H2 x kTileQ) pairs of q along d, queries along the lanes; acc (nq x
      // HS); st (TK x kTileQ) raw scores; pp (TK / 2 x kTileQ) key pairs of P.
      float* buf[4];
      tile_scratch().carve({H2 * kTileQ, kTileQ * HS, TK * kTileQ, TK / 2 * kTileQ}, buf);
      auto* Qt = reinterpret_cast<uint32_t*>(buf[0]);
      float *acc = buf[1], *st = buf[2];
      auto* pp = reinterpret_cast<uint32_t*>(buf[3]);
      alignas(64) float m[kTileQ], l[kTileQ], corr[kTileQ];
      static_assert(kTileQ == 64, "score_softmax_tile works 64 query lanes");
      SoftmaxLanes lanes;
      transpose_row_pairs(q + b * a.q_batch_stride + t0 * a.q_row_stride + h * HS, a.q_row_stride,
                          nq, kTileQ, HS, Qt, kTileQ);
      for (int64_t r = 0; r < kTileQ; ++r) m[r] = -FLT_MAX, l[r] = 0.f;
      for (int64_t i = 0; i < nq * HS; ++i) acc[i] = 0.f;
      const int64_t nk = visible_keys(a, t0 + nq - 1);
      for (int64_t j0 = 0; j0 < nk; j0 += TK) {
        const int64_t jb = imin(nk - j0, TK);
        const bool crosses = !tile_unmasked(a, t0, j0, jb);
        const int64_t shift = first_seeing_lane(a, t0, j0);
        // Past the first tile every lane has a maximum m. A tile no lane's
        // mask touches is scored against m as it stands, in one pass, and P
        // stays below 2^kStaleMaxExcess (no rescale of acc, no max pass),
        // unless some score exceeds m by more: then the tile is redone below.
        if (j0 > 0 && !crosses && jb % 2 == 0) {
          for (int g = 0; g < kTileQ / 16; ++g) {
            _mm512_store_ps(lanes.neg_m + 16 * g,
                            _mm512_sub_ps(_mm512_setzero_ps(), _mm512_load_ps(m + 16 * g)));
            _mm512_store_ps(lanes.sum + 16 * g, _mm512_load_ps(l + 16 * g));
            _mm512_store_ps(lanes.max + 16 * g, _mm512_set1_ps(-INFINITY));
          }
          score_softmax_tile(jb, kc + j0 * H2, H2, Qt, sc, lanes, pp);
          bool within = true;
          for (int g = 0; g < kTileQ / 16; ++g)
            within &= _mm512_cmp_ps_mask(_mm512_fmadd_ps(_mm512_load_ps(lanes.max + 16 * g), sc,
                                                         _mm512_load_ps(lanes.neg_m + 16 * g)),
                                         _mm512_set1_ps(kStaleMaxExcess), _CMP_LE_OQ) == 0xffff;
          if (within) {
            std::memcpy(l, lanes.sum, sizeof l);
            tile_dot_bf16(nq, HS, jb / 2, pp, 1, kTileQ, vp + j0 / 2 * HS, HS, acc, HS, true);
            continue;
          }
        }
        tile_dot_bf16(jb, kTileQ, H2, kc + j0 * H2, H2, 1, Qt, kTileQ, st, kTileQ, false, nullptr,
                      crosses ? TileTrim{TileTrim::Cols, shift} : TileTrim{});
        // Masked scores become -inf, whose exp2 below is exactly 0.
        if (crosses) mask_tile(a, t0, j0, jb, nq, st, kTileQ, -INFINITY);
        __m512 x[kTileQ / 16];
        for (int g = 0; g < kTileQ / 16; ++g) x[g] = _mm512_set1_ps(-INFINITY);
        for (int64_t j = 0; j < jb; ++j)
          for (int g = 0; g < kTileQ / 16; ++g)
            x[g] = _mm512_max_ps(x[g], _mm512_load_ps(st + j * kTileQ + 16 * g));
        // m starts at -FLT_MAX, not -inf, so a row that has seen no key yet
        // (all its lanes masked to -inf) still has corr = exp2(0) = 1. The
        // scale is positive (bf16_dot_usable), so it commutes with the maximum.
        bool rescale = false;
        for (int g = 0; g < kTileQ / 16; ++g) {
          const __m512 m_old = _mm512_load_ps(m + 16 * g);
          const __m512 m_new = _mm512_max_ps(m_old, _mm512_mul_ps(x[g], sc));
          const __m512 c = exp2_nonpos_v<Avx512>(_mm512_sub_ps(m_old, m_new));
          _mm512_store_ps(corr + 16 * g, c);
          _mm512_store_ps(m + 16 * g, m_new);
          rescale |= _mm512_cmp_ps_mask(c, _mm512_set1_ps(1.f), _CMP_NEQ_UQ) != 0;
        }
        // l = l * corr + the tile's P summed in key order.
        for (int g = 0; g < kTileQ / 16; ++g) {
          const __m512 nm = _mm512_sub_ps(_mm512_setzero_ps(), _mm512_load_ps(m + 16 * g));
          __m512 s = _mm512_mul_ps(_mm512_load_ps(l + 16 * g), _mm512_load_ps(corr + 16 * g));
          const float* sj = st + 16 * g;
          for (int64_t j = 0; j < jb; j += 2) {
            const __m512 e0 = exp2_bf16_v(_mm512_fmadd_ps(_mm512_load_ps(sj + j * kTileQ), sc, nm));
            s = _mm512_add_ps(s, e0);
            __m512 e1 = _mm512_setzero_ps();
            if (j + 1 < jb) {
              e1 = exp2_bf16_v(_mm512_fmadd_ps(_mm512_load_ps(sj + (j + 1) * kTileQ), sc, nm));
              s = _mm512_add_ps(s, e1);
            }
            _mm512_store_si512(pp + j / 2 * kTileQ + 16 * g, bf16_pair_words(e0, e1));
          }
          _mm512_store_ps(l + 16 * g, s);
        }
        // acc[r, :] = corr[r] acc[r, :] + sum_j P[r, j] v_j; keys in row r's
        // future (P = 0) are not visited.
        tile_dot_bf16(nq, HS, (jb + 1) / 2, pp, 1, kTileQ, vp + j0 / 2 * HS, HS, acc, HS, true,
                      rescale ? corr : nullptr,
                      crosses ? TileTrim{TileTrim::KTo, -shift} : TileTrim{});
      }
      finish_query_rows<S>(a, b, h, t0, nq, acc, l, m, o, lse);
    });
  }
}

// The backward of attention_bwd_t for bf16 storage on AVX512-BF16: the same
// order of work, all five products as tile_dot_bf16 over bf16 pairs (q, k, v,
// dO as stored; P and dS rounded to bf16 before their products), the scale
// applied to the f32 scores and to dK and dQ at the end.
template <class S>
void attention_bwd_dot(const AttentionArgs& a, const bf16_t* dout, const bf16_t* q, const bf16_t* k,
                       const bf16_t* v, const bf16_t* o, const float* lse, bf16_t* dq, bf16_t* dk,
                       bf16_t* dv, int threads) {
  const int64_t HS = a.HS, H2 = HS / 2, group = a.NH / a.NKV, Tk = a.Tk;
  const int64_t nqb = (a.Tq + kTileQ - 1) / kTileQ;
  const __m512 sc = _mm512_set1_ps(a.scale * kLog2e);
  parallel_items(a.B * a.NKV, threads, [&](int64_t item) {
    const int64_t kvh = item % a.NKV, b = item / a.NKV;
    const int64_t kv_off = b * a.kv_batch_stride + kvh * HS;
    // Kp: key pairs ((Tk + 1) / 2 x HS words); dKf, dVf: (Tk x HS) f32; Qp, dOp:
    // (H2 x kTileQ) words, d pairs with queries along the lanes; Qr, dOq: query
    // pairs (kTileQ / 2 x HS words); Pa, dSa: st and dpt rounded (kTileKDot x
    // kTileQ / 2 words); dSp: key pairs of dS (kTileKDot / 2 x kTileQ words).
    // Kc, Vc: the head's K and V rows back to back (H2 words each).
    float* buf[15];
    tile_scratch().carve(
        {(Tk + 1) / 2 * HS, Tk * HS, Tk * HS, H2 * kTileQ, H2 * kTileQ, kTileQ / 2 * HS,
         kTileQ / 2 * HS, kTileQ * HS, kTileKDot * kTileQ, kTileKDot * kTileQ,
         kTileKDot * kTileQ / 2, kTileKDot * kTileQ / 2, kTileKDot / 2 * kTileQ, Tk * H2, Tk * H2},
        buf);
    auto* Kc = reinterpret_cast<uint32_t*>(buf[13]);
    auto* Vc = reinterpret_cast<uint32_t*>(buf[14]);
    copy_rows(k + kv_off, a.kv_row_stride, Tk, HS, Kc);
    copy_rows(v + kv_off, a.kv_row_stride, Tk, HS, Vc);
    auto* Kp = reinterpret_cast<uint32_t*>(buf[0]);
    float *dKf = buf[1], *dVf = buf[2];
    auto* Qp = reinterpret_cast<uint32_t*>(buf[3]);
    auto* dOp = reinterpret_cast<uint32_t*>(buf[4]);
    auto* Qr = reinterpret_cast<uint32_t*>(buf[5]);
    auto* dOq = reinterpret_cast<uint32_t*>(buf[6]);
    float *dQa = buf[7], *st = buf[8], *dpt = buf[9];
    auto* Pa = reinterpret_cast<uint32_t*>(buf[10]);
    auto* dSa = reinterpret_cast<uint32_t*>(buf[11]);
    auto* dSp = reinterpret_cast<uint32_t*>(buf[12]);
    alignas(64) float lr[kTileQ], Dr[kTileQ], dor[512];
    pack_bf16_pairs(k + kv_off, a.kv_row_stride, Tk, HS, Kp);
    for (int64_t i = 0; i < Tk * HS; ++i) dKf[i] = dVf[i] = 0.f;
    for (int64_t hg = 0; hg < group; ++hg) {
      const int64_t h = kvh * group + hg;
      for (int64_t qb = 0; qb < nqb; ++qb) {
        const int64_t t0 = qb * kTileQ, nq = imin(a.Tq - t0, kTileQ);
        const int64_t nk = visible_keys(a, t0 + nq - 1);
        if (nk <= 0) continue;
        const bf16_t* q0 = q + b * a.q_batch_stride + t0 * a.q_row_stride + h * HS;
        const bf16_t* do0 = dout + ((b * a.Tq + t0) * a.NH + h) * HS;
        // Padding lanes get zero q and dO, so zero scores and dP, and P = dS = 0.
        transpose_row_pairs(q0, a.q_row_stride, nq, kTileQ, HS, Qp, kTileQ);
        transpose_row_pairs(do0, a.NH * HS, nq, kTileQ, HS, dOp, kTileQ);
        for (int64_t r = 0; r < kTileQ; ++r) {
          if (r < nq) {
            const int64_t t = t0 + r;
            load_row<S>(do0 + r * a.NH * HS, 1.f, dor, HS);
            Dr[r] = dot_row<S>(dor, o + ((b * a.Tq + t) * a.NH + h) * HS, HS);
            lr[r] = lse[(b * a.NH + h) * a.Tq + t] * kLog2e;
          } else {
            Dr[r] = 0.f;
            lr[r] = INFINITY;
          }
        }
        pack_bf16_pairs(q0, a.q_row_stride, nq, HS, Qr);
        pack_bf16_pairs(do0, a.NH * HS, nq, HS, dOq);
        for (int64_t i = 0; i < nq * HS; ++i) dQa[i] = 0.f;
        prefetch_rows_for_write(dq + b * a.q_batch_stride + t0 * a.q_row_stride + h * HS,
                                a.q_row_stride, nq, HS * int64_t(sizeof(bf16_t)));
        for (int64_t j0 = 0; j0 < nk; j0 += kTileKDot) {
          const int64_t jb = imin(nk - j0, kTileKDot);
          const uint32_t* Kj = Kc + j0 * H2;
          const uint32_t* Vj = Vc + j0 * H2;
          const bool crosses = !tile_unmasked(a, t0, j0, jb);
          const int64_t shift = first_seeing_lane(a, t0, j0);
          const TileTrim cols = crosses ? TileTrim{TileTrim::Cols, shift} : TileTrim{};
          tile_dot_bf16(jb, kTileQ, H2, Kj, H2, 1, Qp, kTileQ, st, kTileQ, false, nullptr, cols);
          tile_dot_bf16(jb, kTileQ, H2, Vj, H2, 1, dOp, kTileQ, dpt, kTileQ, false, nullptr, cols);
          // Masked lanes: scores -inf (P = exp2 = 0 exactly) and dP 0, so dS = 0
          // there too, and the uncomputed corner's contents are never read.
          if (crosses) {
            mask_tile(a, t0, j0, jb, nq, st, kTileQ, -INFINITY);
            mask_tile(a, t0, j0, jb, nq, dpt, kTileQ, 0.f);
          }
          // One pass per key pair: P and dS of keys j and j + 1, rounded once,
          // written as rows of Pa and dSa and as the key pairs of dSp.
          for (int64_t j = 0; j < jb; j += 2) {
            const bool two = j + 1 < jb;
            for (int64_t r = 0; r < kTileQ; r += 16) {
              const __m512 nl = _mm512_sub_ps(_mm512_setzero_ps(), _mm512_load_ps(lr + r));
              const __m512 dr = _mm512_load_ps(Dr + r);
              const float* s0 = st + j * kTileQ + r;
              const float* d0 = dpt + j * kTileQ + r;
              const __m512 p0 = exp2_bf16_v(_mm512_fmadd_ps(_mm512_load_ps(s0), sc, nl));
              const __m512 ds0 = _mm512_mul_ps(p0, _mm512_sub_ps(_mm512_load_ps(d0), dr));
              __m512 p1 = _mm512_setzero_ps(), ds1 = _mm512_setzero_ps();
              if (two) {
                p1 = exp2_bf16_v(_mm512_fmadd_ps(_mm512_load_ps(s0 + kTileQ), sc, nl));
                ds1 = _mm512_mul_ps(p1, _mm512_sub_ps(_mm512_load_ps(d0 + kTileQ), dr));
              }
              // Words 0..15: key j's 16 lanes, 16..31: key j + 1's.
              const __m512i pw = (__m512i)_mm512_cvtne2ps_pbh(p1, p0);
              const __m512i dw = (__m512i)_mm512_cvtne2ps_pbh(ds1, ds0);
              uint32_t* pa = Pa + j * (kTileQ / 2) + r / 2;
              uint32_t* da = dSa + j * (kTileQ / 2) + r / 2;
              _mm256_store_si256(reinterpret_cast<__m256i*>(pa), _mm512_castsi512_si256(pw));
              _mm256_store_si256(reinterpret_cast<__m256i*>(da), _mm512_castsi512_si256(dw));
              if (two) {
                _mm256_store_si256(reinterpret_cast<__m256i*>(pa + kTileQ / 2),
                                   _mm512_extracti64x4_epi64(pw, 1));
                _mm256_store_si256(reinterpret_cast<__m256i*>(da + kTileQ / 2),
                                   _mm512_extracti64x4_epi64(dw, 1));
              }
              _mm512_store_si512(dSp + j / 2 * kTileQ + r, interleave_bf16_halves(dw));
            }
          }
          const TileTrim from = crosses ? TileTrim{TileTrim::KFrom, shift} : TileTrim{};
          const int64_t nq2 = (nq + 1) / 2;
          tile_dot_bf16(jb, HS, nq2, Pa, kTileQ / 2, 1, dOq, HS, dVf + j0 * HS, HS, true, nullptr,
                        from);
          tile_dot_bf16(jb, HS, nq2, dSa, kTileQ / 2, 1, Qr, HS, dKf + j0 * HS, HS, true, nullptr,
                        from);
          tile_dot_bf16(nq, HS, (jb + 1) / 2, dSp, 1, kTileQ, Kp + j0 / 2 * HS, HS, dQa, HS, true,
                        nullptr, crosses ? TileTrim{TileTrim::KTo, -shift} : TileTrim{});
        }
        add_scaled_rows<S>(dq + b * a.q_batch_stride + t0 * a.q_row_stride + h * HS, a.q_row_stride,
                           dQa, nq, HS, a.scale);
      }
    }
    for (int64_t j = 0; j < Tk; ++j) {
      bf16_t* dkr = dk + kv_off + j * a.kv_row_stride;
      bf16_t* dvr = dv + kv_off + j * a.kv_row_stride;
      const float* dka = dKf + j * HS;
      const float* dva = dVf + j * HS;
      vec_loop<S>(0, HS, [&](auto ll, int64_t d) {
        using L = decltype(ll);
        L::store(dkr + d, L::fma(L::set1(a.scale), L::load(dka + d), L::load(dkr + d)));
        L::store(dvr + d, L::add(L::load(dva + d), L::load(dvr + d)));
      });
    }
  });
}
#endif

template <class S, class T>
void attention_fwd_t(const AttentionArgs& a, const T* q, const T* k, const T* v, T* o, float* lse,
                     int threads) {
  if (a.Tq == 1) {
    attention_fwd_decode<S>(a, q, k, v, o, lse, threads);
    return;
  }
  if (a.Tq < kTiledMinQueries) {
    attention_fwd_rows<S>(a, q, k, v, o, lse, threads);
    return;
  }
#if defined(__AVX512BF16__)
  if constexpr (std::is_same_v<T, bf16_t> && S::W == 16)
    if (bf16_dot_usable(a)) {
      attention_fwd_dot<S>(a, q, k, v, o, lse, threads);
      return;
    }
#endif
  attention_fwd_tiled<S>(a, q, k, v, o, lse, threads);
}

template <class S>
void attention_forward(const AttentionArgs& a, const void* q, const void* k, const void* v, void* o,
                       float* lse, int threads) {
  with_dtype(a.dt, [&](auto t) {
    using T = decltype(t);
    attention_fwd_t<S>(a, static_cast<const T*>(q), static_cast<const T*>(k),
                       static_cast<const T*>(v), static_cast<T*>(o), lse, threads);
  });
}
template <class S>
void attention_backward(const AttentionArgs& a, const void* dout, const void* q, const void* k,
                        const void* v, const void* o, const float* lse, void* dq, void* dk,
                        void* dv, int threads) {
#if defined(__AVX512BF16__)
  if constexpr (S::W == 16)
    if (a.dt == DType::BF16 && bf16_dot_usable(a)) {
      attention_bwd_dot<S>(a, static_cast<const bf16_t*>(dout), static_cast<const bf16_t*>(q),
                           static_cast<const bf16_t*>(k), static_cast<const bf16_t*>(v),
                           static_cast<const bf16_t*>(o), lse, static_cast<bf16_t*>(dq),
                           static_cast<bf16_t*>(dk), static_cast<bf16_t*>(dv), threads);
      return;
    }
#endif
  with_dtype(a.dt, [&](auto t) {
    using T = decltype(t);
    attention_bwd_t<S>(a, static_cast<const T*>(dout), static_cast<const T*>(q),
                       static_cast<const T*>(k), static_cast<const T*>(v), static_cast<const T*>(o),
                       lse, static_cast<T*>(dq), static_cast<T*>(dk), static_cast<T*>(dv), threads);
  });
}

}  // namespace keel::backend::cpu::KEEL_CPU_ISA
