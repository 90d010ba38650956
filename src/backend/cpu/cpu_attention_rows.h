// Causal attention forward one query row at a time, for short query blocks
// (1 < Tq < kTiledMinQueries; a single row is cpu_attention_decode.h's): each
// row streams over key blocks with an online softmax (dot products and
// axpys), which for a few rows beats preparing the tiles of cpu_attention.h.
// Work items are (b, h, block of kQueryBlock rows).
#pragma once
#include "backend/cpu/simd.h"

namespace keel::backend::cpu::KEEL_CPU_ISA {

inline constexpr int64_t kKeyBlock = 64;
inline constexpr int64_t kQueryBlock = 16;

// dot(a[0..n), b[0..n)) with a in f32 and b in storage type T.
template <class S, class T>
inline float dot_row(const float* a, const T* b, int64_t n) {
  auto acc0 = S::zero(), acc1 = S::zero();
  int64_t d = 0;
  for (; d + 2 * S::W <= n; d += 2 * S::W) {
    acc0 = S::fma(S::load(a + d), S::load(b + d), acc0);
    acc1 = S::fma(S::load(a + d + S::W), S::load(b + d + S::W), acc1);
  }
  for (; d + S::W <= n; d += S::W) acc0 = S::fma(S::load(a + d), S::load(b + d), acc0);
  float s = S::hsum(S::add(acc0, acc1));
  float t = 0.f;
  for (; d < n; ++d) t = std::fma(a[d], Scalar::load(b + d), t);
  return s + t;
}

// out[0..n) = f32(row) * scale
template <class S, class T>
inline void load_row(const T* row, float scale, float* out, int64_t n) {
  vec_loop<S>(0, n, [&](auto l, int64_t d) {
    using L = decltype(l);
    L::store(out + d, L::mul(L::load(row + d), L::set1(scale)));
  });
}

// y[0..n) += alpha * x[0..n), both f32, or T for x.
template <class S, class X>
inline void axpy(float alpha, const X* x, float* y, int64_t n) {
  vec_loop<S>(0, n, [&](auto l, int64_t d) {
    using L = decltype(l);
    L::store(y + d, L::fma(L::set1(alpha), L::load(x + d), L::load(y + d)));
  });
}

// p[0..n) = exp(s[0..n) - m) in place
template <class S>
inline void exp_shifted(float* p, int64_t n, float m) {
  vec_loop<S>(0, n, [&](auto l, int64_t j) {
    using L = decltype(l);
    L::store(p + j, exp_v<L>(L::sub(L::load(p + j), L::set1(m))));
  });
}

// acc[0..HS) += sum_{j < jn} p[j] * row_j, row_j = base + j * stride (storage
// type T). Four vectors of acc stay in registers over all j; same fma order
// per element as one axpy per key.
template <class S, class T>
inline void weighted_rows(const float* p, int64_t jn, const T* base, int64_t stride, float* acc,
                          int64_t HS) {
  int64_t d0 = 0;
  for (; d0 + 4 * S::W <= HS; d0 += 4 * S::W) {
    auto a0 = S::load(acc + d0), a1 = S::load(acc + d0 + S::W);
    auto a2 = S::load(acc + d0 + 2 * S::W), a3 = S::load(acc + d0 + 3 * S::W);
    for (int64_t j = 0; j < jn; ++j) {
      auto pj = S::set1(p[j]);
      const T* r = base + j * stride + d0;
      a0 = S::fma(pj, S::load(r), a0);
      a1 = S::fma(pj, S::load(r + S::W), a1);
      a2 = S::fma(pj, S::load(r + 2 * S::W), a2);
      a3 = S::fma(pj, S::load(r + 3 * S::W), a3);
    }
    S::store(acc + d0, a0);
    S::store(acc + d0 + S::W, a1);
    S::store(acc + d0 + 2 * S::W, a2);
    S::store(acc + d0 + 3 * S::W, a3);
  }
  if (d0 < HS)
    for (int64_t j = 0; j < jn; ++j) axpy<S>(p[j], base + j * stride + d0, acc + d0, HS - d0);
}

// One query row's scores over jn keys (rows `stride` apart), times scale.
// Four keys at a time share each load of the query; every key is one
// accumulator over HS, summed once, in the same order wherever it falls.
template <class S, class T>
inline void row_scores(const float* q, const T* k, int64_t stride, int64_t jn, int64_t HS,
                       float scale, float* s) {
  auto one = [&](const T* kr) {
    auto acc = S::zero();
    int64_t d = 0;
    for (; d + S::W <= HS; d += S::W) acc = S::fma(S::load(q + d), S::load(kr + d), acc);
    float t = S::hsum(acc);
    for (; d < HS; ++d) t = std::fma(q[d], Scalar::load(kr + d), t);
    return t * scale;
  };
  int64_t j = 0;
  if (HS % S::W == 0)
    for (; j + 4 <= jn; j += 4) {
      const T *k0 = k + j * stride, *k1 = k0 + stride, *k2 = k1 + stride, *k3 = k2 + stride;
      auto a0 = S::zero(), a1 = S::zero(), a2 = S::zero(), a3 = S::zero();
      for (int64_t d = 0; d < HS; d += S::W) {
        const auto qd = S::load(q + d);
        a0 = S::fma(qd, S::load(k0 + d), a0);
        a1 = S::fma(qd, S::load(k1 + d), a1);
        a2 = S::fma(qd, S::load(k2 + d), a2);
        a3 = S::fma(qd, S::load(k3 + d), a3);
      }
      s[j] = S::hsum(a0) * scale;
      s[j + 1] = S::hsum(a1) * scale;
      s[j + 2] = S::hsum(a2) * scale;
      s[j + 3] = S::hsum(a3) * scale;
    }
  for (; j < jn; ++j) s[j] = one(k + j * stride);
}

// acc[0..HS) += sum_{j < jn} p[j] * row_j for one query row: even and odd
// keys in two register sets (one chain of FMAs per key was the decode loop's
// latency bound), added at the end of the block.
template <class S, class T>
inline void weighted_rows_2(const float* p, int64_t jn, const T* base, int64_t stride, float* acc,
                            int64_t HS) {
  int64_t d0 = 0;
  for (; d0 + 2 * S::W <= HS; d0 += 2 * S::W) {
    auto a0 = S::load(acc + d0), a1 = S::load(acc + d0 + S::W);
    auto b0 = S::zero(), b1 = S::zero();
    int64_t j = 0;
    for (; j + 2 <= jn; j += 2) {
      const auto pj = S::set1(p[j]), pk = S::set1(p[j + 1]);
      const T* r = base + j * stride + d0;
      a0 = S::fma(pj, S::load(r), a0);
      a1 = S::fma(pj, S::load(r + S::W), a1);
      b0 = S::fma(pk, S::load(r + stride), b0);
      b1 = S::fma(pk, S::load(r + stride + S::W), b1);
    }
    if (j < jn) {
      const auto pj = S::set1(p[j]);
      const T* r = base + j * stride + d0;
      a0 = S::fma(pj, S::load(r), a0);
      a1 = S::fma(pj, S::load(r + S::W), a1);
    }
    S::store(acc + d0, S::add(a0, b0));
    S::store(acc + d0 + S::W, S::add(a1, b1));
  }
  if (d0 < HS)
    for (int64_t j = 0; j < jn; ++j) axpy<S>(p[j], base + j * stride + d0, acc + d0, HS - d0);
}

// Keys a query row t may see: 0..Tk-Tq+t.
inline int64_t visible_keys(const AttentionArgs& a, int64_t t) {
  return imax(0, imin(a.Tk, a.Tk - a.Tq + t + 1));
}

// Kt[d, j] = f32(K[j0 + j, d]) for j < jn, 0 for jn <= j < kKeyBlock: keys
// along the vector lanes, so scores need no horizontal sums.
template <class S, class T>
inline void transpose_block(const T* base, int64_t row_stride, int64_t jn, int64_t HS, float* Kt) {
  for (int64_t j = 0; j < jn; ++j) {
    const T* row = base + j * row_stride;
    for (int64_t d = 0; d < HS; ++d) Kt[d * kKeyBlock + j] = Scalar::load(row + d);
  }
  for (int64_t j = jn; j < kKeyBlock; ++j)
    for (int64_t d = 0; d < HS; ++d) Kt[d * kKeyBlock + j] = 0.f;
}

// s[j] = sum_d q[d] Kt[d, j] for all kKeyBlock lanes of a transposed block.
template <class S>
inline void block_scores(const float* q, const float* Kt, int64_t HS, float scale, float* s) {
  constexpr int kG = int(kKeyBlock / S::W);
  typename S::V acc[kG];
  for (int g = 0; g < kG; ++g) acc[g] = S::zero();
  for (int64_t d = 0; d < HS; ++d) {
    auto qd = S::set1(q[d]);
    const float* kr = Kt + d * kKeyBlock;
    for (int g = 0; g < kG; ++g) acc[g] = S::fma(qd, S::load(kr + g * S::W), acc[g]);
  }
  for (int g = 0; g < kG; ++g) S::store(s + g * S::W, S::mul(acc[g], S::set1(scale)));
}

template <class S, class T>
void attention_fwd_rows(const AttentionArgs& a, const T* q, const T* k, const T* v, T* o,
                        float* lse, int threads) {
  const int64_t HS = a.HS, group = a.NH / a.NKV;
  const int64_t nqb = (a.Tq + kQueryBlock - 1) / kQueryBlock;
  const auto body = [&](int64_t item) {
    int64_t qb = item % nqb, h = (item / nqb) % a.NH, b = item / (nqb * a.NH);
    int64_t kvh = h / group;
    int64_t t0 = qb * kQueryBlock, nq = imin(a.Tq - t0, kQueryBlock);
    const T* kb = k + b * a.kv_batch_stride + kvh * HS;
    const T* vb = v + b * a.kv_batch_stride + kvh * HS;
    Buf<float> qs(nq * HS), acc(nq * HS), Kt(nq > 1 ? HS * kKeyBlock : 1);
    float m[kQueryBlock], l[kQueryBlock];
    alignas(64) float s[kKeyBlock];
    for (int64_t r = 0; r < nq; ++r) {
      load_row<S>(q + b * a.q_batch_stride + (t0 + r) * a.q_row_stride + h * HS, 1.f, qs.p + r * HS,
                  HS);
      for (int64_t d = 0; d < HS; ++d) acc[r * HS + d] = 0.f;
      m[r] = -INFINITY;
      l[r] = 0.f;
    }
    int64_t nk_max = visible_keys(a, t0 + nq - 1);
    // A block of one query row (the last of Tq = 17, 33, ...): a dot per
    // key beats transposing the block for a single use (measured: the
    // transpose was most of a one-row block's attention time).
    const bool direct = nq == 1;
    for (int64_t j0 = 0; j0 < nk_max; j0 += kKeyBlock) {
      if (!direct)
        transpose_block<S>(kb + j0 * a.kv_row_stride, a.kv_row_stride, imin(nk_max - j0, kKeyBlock),
                           HS, Kt.p);
      for (int64_t r = 0; r < nq; ++r) {
        int64_t jn = imin(visible_keys(a, t0 + r) - j0, kKeyBlock);
        if (jn <= 0) continue;
        if (direct)
          row_scores<S>(qs.p, kb + j0 * a.kv_row_stride, a.kv_row_stride, jn, HS, a.scale, s);
        else
          block_scores<S>(qs.p + r * HS, Kt.p, HS, a.scale, s);
        float bm = -INFINITY;
        for (int64_t j = 0; j < jn; ++j) bm = Scalar::max(bm, s[j]);
        float m_new = Scalar::max(m[r], bm);
        float corr = exp_v<Scalar>(m[r] - m_new);
        float* ar = acc.p + r * HS;
        if (corr != 1.f) {
          l[r] *= corr;
          for (int64_t d = 0; d < HS; ++d) ar[d] *= corr;
        }
        exp_shifted<S>(s, jn, m_new);
        if (direct) {
          l[r] += row_sum<S>(jn, [&](auto ll, int64_t j) {
            using L = decltype(ll);
            return L::load(s + j);
          });
          weighted_rows_2<S>(s, jn, vb + j0 * a.kv_row_stride, a.kv_row_stride, ar, HS);
        } else {
          for (int64_t j = 0; j < jn; ++j) l[r] += s[j];
          weighted_rows<S>(s, jn, vb + j0 * a.kv_row_stride, a.kv_row_stride, ar, HS);
        }
        m[r] = m_new;
      }
    }
    for (int64_t r = 0; r < nq; ++r) {
      int64_t t = t0 + r;
      bool any = visible_keys(a, t) > 0;
      T* orow = o + ((b * a.Tq + t) * a.NH + h) * HS;
      float inv = any ? 1.f / l[r] : 0.f;
      const float* ar = acc.p + r * HS;
      vec_loop<S>(0, HS, [&](auto ll, int64_t d) {
        using L = decltype(ll);
        L::store(orow + d, L::mul(L::load(ar + d), L::set1(inv)));
      });
      lse[(b * a.NH + h) * a.Tq + t] = any ? m[r] + std::log(l[r]) : -INFINITY;
    }
  };
  parallel_items(a.B * a.NH * nqb, threads, body);
}

}  // namespace keel::backend::cpu::KEEL_CPU_ISA
