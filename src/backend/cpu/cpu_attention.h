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

#include "backend/cpu/cpu_attention_rows.h"
#include "backend/cpu/cpu_tile_dot_bf16.h"
#include "backend/cpu/cpu_tile_gemm.h"
#include "backend/cpu/simd.h"
#include "core/cpu_features.h"

namespace keel::backend::cpu::KEEL_CPU_ISA {

inline constexpr int64_t kTileQ = 64;
inline constexpr int64_t kTileK = 64;
// Keys per tile on the bf16 pair path, whose products are twice as fast: 128
// halves the per-tile work of the softmax bookkeeping (measured +8-15% there,
// no gain in f32).
inline constexpr int64_t kTileKDot = 128;
// Below this many query rows the forward takes the row-at-a-time path.
inline constexpr int64_t kTiledMinQueries = 16;
inline constexpr float kLog2e = 1.44269504088896341f;
inline constexpr float kLn2 = 0.693147180559945309f;

// Per-thread f32 scratch that outlives a kernel call, grown when a call needs
// more. Freshly allocated large buffers cost a page fault per 4 KiB on every
// call (measured: in a VM, more time than the arithmetic of a T=256 backward).
struct TileScratch {
  float* p = nullptr;
  int64_t n = 0;
  TileScratch() = default;
  TileScratch(const TileScratch&) = delete;
  TileScratch& operator=(const TileScratch&) = delete;
  ~TileScratch() { std::free(p); }
  // Consecutive pieces of the given sizes, each 64-byte aligned.
  template <size_t N>
  void carve(const int64_t (&sizes)[N], float* (&out)[N]) {
    int64_t total = 0;
    for (int64_t s : sizes) total += (s + 15) / 16 * 16;
    if (total > n) {
      std::free(p);
      p = static_cast<float*>(std::aligned_alloc(64, size_t(total) * sizeof(float)));
      n = total;
    }
    int64_t off = 0;
    for (size_t i = 0; i < N; ++i) out[i] = p + off, off += (sizes[i] + 15) / 16 * 16;
  }
};
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

// Whether the bf16 pair products apply: the CPU has AVX512-BF16, HS is a
// whole number of 16-lane vectors of pairs (pairs along the head dimension, N
// of the products along it), rows of 4-byte words start at even elements, and
// a head fits the backward's row buffer.
inline bool bf16_dot_usable(const AttentionArgs& a) {
  return cpu_features().avx512_bf16 && a.HS % 32 == 0 && a.HS <= 512 && a.kv_row_stride % 2 == 0 &&
         a.q_row_stride % 2 == 0 && a.kv_batch_stride % 2 == 0 && a.q_batch_stride % 2 == 0;
}

// Dot: bf16 storage with AVX512-BF16, both products as vdpbf16ps on bf16
// pairs (tile_dot_bf16): q and k as stored, P rounded to bf16 before P V (l
// sums P before rounding), the scale applied to the f32 scores.
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

template <class S, class T, bool Dot = false>
void attention_fwd_tiled(const AttentionArgs& a, const T* q, const T* k, const T* v, T* o,
                         float* lse, int threads) {
  const int64_t HS = a.HS, group = a.NH / a.NKV;
  const int64_t nqb = (a.Tq + kTileQ - 1) / kTileQ;
  const float qscale = a.scale * kLog2e;
  constexpr int64_t TK = Dot ? kTileKDot : kTileK;
  [[maybe_unused]] const float sscale = qscale;
  parallel_items(a.B * a.NH * nqb, threads, [&](int64_t item) {
    const int64_t qb = item % nqb, h = (item / nqb) % a.NH, b = item / (nqb * a.NH);
    const int64_t kvh = h / group;
    const int64_t t0 = qb * kTileQ, nq = imin(a.Tq - t0, kTileQ);
    const T* kb = k + b * a.kv_batch_stride + kvh * HS;
    const T* vb = v + b * a.kv_batch_stride + kvh * HS;
    // Qt (HS x kTileQ): queries times scale * log2(e), rows along the lanes. acc (nq x HS).
    // With Dot: Qt holds (HS / 2) x kTileQ pairs of q, unscaled, lanes past nq
    // zero; kbuf the P pairs, vbuf the V pairs.
    float* buf[5];
    tile_scratch().carve({HS * kTileQ, kTileQ * HS, TK * kTileQ, TK * HS, TK * HS}, buf);
    float *Qt = buf[0], *acc = buf[1], *st = buf[2], *kbuf = buf[3], *vbuf = buf[4];
    alignas(64) float m[kTileQ], l[kTileQ], corr[kTileQ], bm[kTileQ];
    for (int64_t r = 0; r < nq; ++r) {
      const T* qr = q + b * a.q_batch_stride + (t0 + r) * a.q_row_stride + h * HS;
      if constexpr (Dot) {
        uint32_t* qp = reinterpret_cast<uint32_t*>(Qt);
        for (int64_t d2 = 0; d2 < HS / 2; ++d2)
          std::memcpy(qp + d2 * kTileQ + r, qr + 2 * d2, sizeof(uint32_t));
      } else {
        for (int64_t d = 0; d < HS; ++d) Qt[d * kTileQ + r] = Scalar::load(qr + d) * qscale;
      }
      m[r] = -FLT_MAX;
      l[r] = 0.f;
    }
    if constexpr (Dot)
      for (int64_t d2 = 0; d2 < HS / 2; ++d2)
        for (int64_t r = nq; r < kTileQ; ++r) reinterpret_cast<uint32_t*>(Qt)[d2 * kTileQ + r] = 0;
    for (int64_t i = 0; i < nq * HS; ++i) acc[i] = 0.f;
    const int64_t nk = visible_keys(a, t0 + nq - 1);
    for (int64_t j0 = 0; j0 < nk; j0 += TK) {
      const int64_t jb = imin(nk - j0, TK);
      // st[j, r] = scale log2(e) q_r . k_j; the masked corner is not computed.
      const bool crosses = !tile_unmasked(a, t0, j0, jb);
      const int64_t shift = first_seeing_lane(a, t0, j0);
      const TileTrim cols = crosses ? TileTrim{TileTrim::Cols, shift} : TileTrim{};
      if constexpr (Dot) {
#if defined(__AVX512BF16__)
        tile_dot_bf16(jb, kTileQ, HS / 2,
                      reinterpret_cast<const uint32_t*>(kb + j0 * a.kv_row_stride),
                      a.kv_row_stride / 2, 1, reinterpret_cast<const uint32_t*>(Qt), kTileQ, st,
                      kTileQ, false, nullptr, cols);
#endif
      } else {
        const F32Rows K = f32_rows<S>(kb + j0 * a.kv_row_stride, a.kv_row_stride, jb, HS, kbuf);
        tile_gemm<S>(jb, nq, HS, K.p, K.ld, 1, Qt, kTileQ, st, kTileQ, false, nullptr, cols);
      }
      const bool masked = crosses && mask_tile(a, t0, j0, jb, nq, st, kTileQ, -INFINITY);
      vec_loop<S>(0, nq, [&](auto ll, int64_t r) {
        using L = decltype(ll);
        auto x = L::set1(-INFINITY);
        for (int64_t j = 0; j < jb; ++j) {
          if constexpr (Dot) {
            float* p = st + j * kTileQ + r;
            L::store(p, L::mul(L::load(p), L::set1(sscale)));
          }
          x = L::max(x, L::load(st + j * kTileQ + r));
        }
        L::store(bm + r, x);
      });
      // m starts at -FLT_MAX, not -inf, so a row that has seen no key yet
      // (all its lanes masked to -inf) still has corr = exp2(0) = 1.
      vec_loop<S>(0, nq, [&](auto ll, int64_t r) {
        using L = decltype(ll);
        const auto m_old = L::load(m + r), m_new = L::max(m_old, L::load(bm + r));
        L::store(corr + r, exp2_nonpos_v<L>(L::sub(m_old, m_new)));
        L::store(m + r, m_new);
      });
      bool rescale = false;
      for (int64_t r = 0; r < nq; ++r) rescale |= corr[r] != 1.f;
      if (masked) {
        for (int64_t j = 0; j < jb; ++j)
          vec_loop<S>(0, nq, [&](auto ll, int64_t r) {
            using L = decltype(ll);
            float* p = st + j * kTileQ + r;
            L::store(p, exp2_nonpos_v<L>(L::sub(L::load(p), L::load(m + r))));
          });
        mask_tile(a, t0, j0, jb, nq, st, kTileQ, 0.f);
        // l = l * corr + column sums of P^T, summed in key order.
        vec_loop<S>(0, nq, [&](auto ll, int64_t r) {
          using L = decltype(ll);
          auto s = L::mul(L::load(l + r), L::load(corr + r));
          for (int64_t j = 0; j < jb; ++j) s = L::add(s, L::load(st + j * kTileQ + r));
          L::store(l + r, s);
        });
      } else {
        // The same values and summation order in one pass over the tile.
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
      }
      // acc[r, :] = corr[r] acc[r, :] + sum_j P[r, j] v_j, P[r, j] read from
      // st[j, r]; keys in row r's future (P = 0) are not visited.
      const TileTrim to = crosses ? TileTrim{TileTrim::KTo, -shift} : TileTrim{};
      if constexpr (Dot) {
#if defined(__AVX512BF16__)
        uint32_t* pp = reinterpret_cast<uint32_t*>(kbuf);
        uint32_t* vp = reinterpret_cast<uint32_t*>(vbuf);
        pack_f32_pairs(st, kTileQ, jb, kTileQ, pp);
        pack_bf16_pairs(vb + j0 * a.kv_row_stride, a.kv_row_stride, jb, HS, vp);
        tile_dot_bf16(nq, HS, (jb + 1) / 2, pp, 1, kTileQ, vp, HS, acc, HS, true,
                      rescale ? corr : nullptr, to);
#endif
      } else {
        const F32Rows V = f32_rows<S>(vb + j0 * a.kv_row_stride, a.kv_row_stride, jb, HS, vbuf);
        tile_gemm<S>(nq, HS, jb, st, 1, kTileQ, V.p, V.ld, acc, HS, true, rescale ? corr : nullptr,
                     to);
      }
    }
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
          for (int64_t d = 0; d < HS; ++d) {
            Qt[d * kTileQ + r] = qs[d] * kLog2e;
            dOt[d * kTileQ + r] = dor[d];
          }
          Dr[r] = dot_row<S>(dor, o + o_off, HS);
          lr[r] = lse[(b * a.NH + h) * a.Tq + t] * kLog2e;
        }
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
          for (int64_t j = 0; j < jb; ++j)
            vec_loop<S>(0, nq, [&](auto ll, int64_t r) {
              using L = decltype(ll);
              float* p = st + j * kTileQ + r;
              L::store(p, exp2_nonpos_v<L>(L::sub(L::load(p), L::load(lr + r))));
            });
          if (crosses) mask_tile(a, t0, j0, jb, nq, st, kTileQ, 0.f);
          for (int64_t j = 0; j < jb; ++j)
            vec_loop<S>(0, nq, [&](auto ll, int64_t r) {
              using L = decltype(ll);
              float* ds = dpt + j * kTileQ + r;
              const auto p = L::load(st + j * kTileQ + r);
              L::store(ds, L::mul(p, L::sub(L::load(ds), L::load(Dr + r))));
            });
          if (crosses) mask_tile(a, t0, j0, jb, nq, dpt, kTileQ, 0.f);
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
// Rows of f32 rounded to bf16 words: out[j * (n / 2) + w] = (x[j][2w], x[j][2w + 1]),
// x[j] = base + j * ld, n a multiple of 16.
inline void round_rows_bf16(const float* base, int64_t ld, int64_t rows, int64_t n, uint32_t* out) {
  for (int64_t j = 0; j < rows; ++j)
    for (int64_t c = 0; c < n; c += 16)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + j * (n / 2) + c / 2),
                          (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(base + j * ld + c)));
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
  const float sscale = a.scale * kLog2e;
  parallel_items(a.B * a.NKV, threads, [&](int64_t item) {
    const int64_t kvh = item % a.NKV, b = item / a.NKV;
    const int64_t kv_off = b * a.kv_batch_stride + kvh * HS;
    // Kp: key pairs ((Tk + 1) / 2 x HS words); dKf, dVf: (Tk x HS) f32; Qp, dOp:
    // (H2 x kTileQ) words, d pairs with queries along the lanes; Qr, dOq: query
    // pairs (kTileQ / 2 x HS words); Pa, dSa: st and dpt rounded (kTileKDot x
    // kTileQ / 2 words); dSp: key pairs of dS (kTileKDot / 2 x kTileQ words).
    float* buf[13];
    tile_scratch().carve(
        {(Tk + 1) / 2 * HS, Tk * HS, Tk * HS, H2 * kTileQ, H2 * kTileQ, kTileQ / 2 * HS,
         kTileQ / 2 * HS, kTileQ * HS, kTileKDot * kTileQ, kTileKDot * kTileQ,
         kTileKDot * kTileQ / 2, kTileKDot * kTileQ / 2, kTileKDot / 2 * kTileQ},
        buf);
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
        for (int64_t r = 0; r < kTileQ; ++r) {
          if (r < nq) {
            const int64_t t = t0 + r;
            for (int64_t d2 = 0; d2 < H2; ++d2) {
              std::memcpy(Qp + d2 * kTileQ + r, q0 + r * a.q_row_stride + 2 * d2, 4);
              std::memcpy(dOp + d2 * kTileQ + r, do0 + r * a.NH * HS + 2 * d2, 4);
            }
            load_row<S>(do0 + r * a.NH * HS, 1.f, dor, HS);
            Dr[r] = dot_row<S>(dor, o + ((b * a.Tq + t) * a.NH + h) * HS, HS);
            lr[r] = lse[(b * a.NH + h) * a.Tq + t] * kLog2e;
          } else {
            // Padding lanes: zero scores and dP give P = dS = 0 there.
            for (int64_t d2 = 0; d2 < H2; ++d2) Qp[d2 * kTileQ + r] = dOp[d2 * kTileQ + r] = 0;
            Dr[r] = 0.f;
            lr[r] = INFINITY;
          }
        }
        pack_bf16_pairs(q0, a.q_row_stride, nq, HS, Qr);
        pack_bf16_pairs(do0, a.NH * HS, nq, HS, dOq);
        for (int64_t i = 0; i < nq * HS; ++i) dQa[i] = 0.f;
        for (int64_t j0 = 0; j0 < nk; j0 += kTileKDot) {
          const int64_t jb = imin(nk - j0, kTileKDot);
          const auto* Kj = reinterpret_cast<const uint32_t*>(k + kv_off + j0 * a.kv_row_stride);
          const auto* Vj = reinterpret_cast<const uint32_t*>(v + kv_off + j0 * a.kv_row_stride);
          const bool crosses = !tile_unmasked(a, t0, j0, jb);
          const int64_t shift = first_seeing_lane(a, t0, j0);
          const TileTrim cols = crosses ? TileTrim{TileTrim::Cols, shift} : TileTrim{};
          tile_dot_bf16(jb, kTileQ, H2, Kj, a.kv_row_stride / 2, 1, Qp, kTileQ, st, kTileQ, false,
                        nullptr, cols);
          tile_dot_bf16(jb, kTileQ, H2, Vj, a.kv_row_stride / 2, 1, dOp, kTileQ, dpt, kTileQ, false,
                        nullptr, cols);
          for (int64_t j = 0; j < jb; ++j)
            for (int64_t r = 0; r < kTileQ; r += 16) {
              float* p = st + j * kTileQ + r;
              const auto x = Avx512::fma(Avx512::load(p), Avx512::set1(sscale),
                                         Avx512::sub(Avx512::set1(0.f), Avx512::load(lr + r)));
              Avx512::store(p, exp2_nonpos_v<Avx512>(x));
            }
          if (crosses) mask_tile(a, t0, j0, jb, nq, st, kTileQ, 0.f);
          for (int64_t j = 0; j < jb; ++j)
            for (int64_t r = 0; r < kTileQ; r += 16) {
              float* ds = dpt + j * kTileQ + r;
              const auto p = Avx512::load(st + j * kTileQ + r);
              Avx512::store(ds,
                            Avx512::mul(p, Avx512::sub(Avx512::load(ds), Avx512::load(Dr + r))));
            }
          if (crosses) mask_tile(a, t0, j0, jb, nq, dpt, kTileQ, 0.f);
          round_rows_bf16(st, kTileQ, jb, kTileQ, Pa);
          round_rows_bf16(dpt, kTileQ, jb, kTileQ, dSa);
          pack_f32_pairs(dpt, kTileQ, jb, kTileQ, dSp);
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
  if (a.Tq < kTiledMinQueries) {
    attention_fwd_rows<S>(a, q, k, v, o, lse, threads);
    return;
  }
#if defined(__AVX512BF16__)
  if constexpr (std::is_same_v<T, bf16_t> && S::W == 16)
    if (bf16_dot_usable(a)) {
      attention_fwd_tiled<S, T, true>(a, q, k, v, o, lse, threads);
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
