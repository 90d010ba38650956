// Fused softmax cross-entropy over rows of logits (N, V): the forward finds
// each row's log-sum-exp in one pass (online over L1-sized blocks) and the loss; the backward adds
// dloss * (softmax - onehot) using the saved lse, with no probability matrix ever stored.
#pragma once
#include "backend/cpu/simd.h"

namespace keel::backend::cpu::KEEL_CPU_ISA {

inline constexpr int64_t kLseBlock = 2048;

template <class S, class T>
inline float row_max(const T* x, int64_t n) {
  auto acc = S::set1(-INFINITY);
  int64_t j = 0;
  for (; j + S::W <= n; j += S::W) acc = S::max(acc, S::load(x + j));
  float m = S::hmax(acc);
  for (; j < n; ++j) m = Scalar::max(m, Scalar::load(x + j));
  return m;
}

template <class S, class T>
void cross_entropy_fwd_t(const T* logits, const int32_t* targets, float* losses, float* lse,
                         int64_t N, int64_t V, int threads) {
  parallel_items(
      N, threads,
      [&](int64_t i) {
        const T* x = logits + i * V;
        // One pass over the row in blocks that stay in L1: block max, rescale
        // the running sum when the max grows, then add the block's exps.
        float m = -INFINITY, s = 0.f;
        for (int64_t b0 = 0; b0 < V; b0 += kLseBlock) {
          const T* xb = x + b0;
          int64_t bn = imin(kLseBlock, V - b0);
          float bm = row_max<S>(xb, bn);
          if (bm > m) {
            s *= exp_v<Scalar>(m - bm);
            m = bm;
          }
          s += row_sum<S>(bn, [&](auto l, int64_t j) {
            using L = decltype(l);
            return exp_v<L>(L::sub(L::load(xb + j), L::set1(m)));
          });
        }
        float z = m + std::log(s);
        lse[i] = z;
        int32_t t = targets[i];
        losses[i] = t >= 0 ? z - Scalar::load(x + t) : 0.f;
      },
      V);
}

template <class S, class T>
void cross_entropy_bwd_t(const T* logits, const int32_t* targets, const float* lse,
                         const float* dloss, T* dlogits, int64_t N, int64_t V, int threads) {
  parallel_items(
      N, threads,
      [&](int64_t i) {
        int32_t t = targets[i];
        if (t < 0) return;
        const T* x = logits + i * V;
        T* dx = dlogits + i * V;
        float z = lse[i], g = dloss[i];
        float old_t = Scalar::load(dx + t);
        vec_loop<S>(0, V, [&](auto l, int64_t j) {
          using L = decltype(l);
          auto p = exp_v<L>(L::sub(L::load(x + j), L::set1(z)));
          L::store(dx + j, L::fma(L::set1(g), p, L::load(dx + j)));
        });
        // The target element again, from its old value, so it is rounded once.
        float pt = exp_v<Scalar>(Scalar::load(x + t) - z);
        Scalar::store(dx + t, std::fma(g, pt - 1.f, old_t));
      },
      V);
}

template <class S>
void cross_entropy_forward(DType dt, const void* logits, const int32_t* targets, float* losses,
                           float* lse, int64_t N, int64_t V, int threads) {
  with_dtype(dt, [&](auto t) {
    using T = decltype(t);
    cross_entropy_fwd_t<S>(static_cast<const T*>(logits), targets, losses, lse, N, V, threads);
  });
}
template <class S>
void cross_entropy_backward(DType dt, const void* logits, const int32_t* targets, const float* lse,
                            const float* dloss, void* dlogits, int64_t N, int64_t V, int threads) {
  with_dtype(dt, [&](auto t) {
    using T = decltype(t);
    cross_entropy_bwd_t<S>(static_cast<const T*>(logits), targets, lse, dloss,
                           static_cast<T*>(dlogits), N, V, threads);
  });
}

}  // namespace keel::backend::cpu::KEEL_CPU_ISA
