// Row reductions (sum, mean, max over the last axis) with their backward, and
// the f64 sum of squares used for gradient norms and health checks, summed
// over fixed chunks combined in order so the value never depends on threads.
#pragma once
#include "backend/cpu/simd.h"

namespace keel::backend::cpu::KEEL_CPU_ISA {

inline constexpr int64_t kSumSquaresChunk = 8192;

// Row maximum where a NaN anywhere makes the result NaN (what health checks need).
template <class S, class T>
inline float row_max_nan(const T* x, int64_t n) {
  auto acc = S::set1(-INFINITY), probe = S::zero();
  int64_t j = 0;
  for (; j + S::W <= n; j += S::W) {
    auto v = S::load(x + j);
    acc = S::max(acc, v);
    probe = S::add(probe, S::sub(v, v));  // NaN iff some v is NaN or infinite
  }
  float m = S::hmax(acc), pr = S::hsum(probe);
  for (; j < n; ++j) {
    float v = Scalar::load(x + j);
    m = Scalar::max(m, v);
    pr += v - v;
  }
  if (pr == pr) return m;
  // Rare: a NaN or an infinity is present. Redo it element by element.
  float r = n > 0 ? Scalar::load(x) : -INFINITY;
  for (j = 0; j < n; ++j) {
    float v = Scalar::load(x + j);
    if (std::isnan(v) || v > r) r = v;
  }
  return r;
}

template <class S>
void reduce_forward(ReduceOp op, DType dt, const void* x, float* y, int64_t N, int64_t C,
                    int threads) {
  with_dtype(dt, [&](auto t) {
    using T = decltype(t);
    auto px = static_cast<const T*>(x);
    parallel_items(
        N, threads,
        [&](int64_t i) {
          const T* row = px + i * C;
          if (op == ReduceOp::Max) {
            y[i] = row_max_nan<S>(row, C);
            return;
          }
          float s = row_sum<S>(C, [&](auto l, int64_t c) { return decltype(l)::load(row + c); });
          y[i] = op == ReduceOp::Mean ? s / float(C) : s;
        },
        C);
  });
}

template <class S>
void reduce_backward(ReduceOp op, DType dt, const void* x, const float* dy, void* dx, int64_t N,
                     int64_t C, int threads) {
  with_dtype(dt, [&](auto t) {
    using T = decltype(t);
    auto px = static_cast<const T*>(x);
    auto pdx = static_cast<T*>(dx);
    parallel_items(
        N, threads,
        [&](int64_t i) {
          T* drow = pdx + i * C;
          if (op == ReduceOp::Max) {
            if (C == 0) return;
            const T* row = px + i * C;
            int64_t arg = 0;  // first index of the maximum, as the reference picks it
            float best = Scalar::load(row);
            for (int64_t c = 1; c < C; ++c) {
              float v = Scalar::load(row + c);
              if (v > best) {
                best = v;
                arg = c;
              }
            }
            Scalar::store(drow + arg, Scalar::load(drow + arg) + dy[i]);
            return;
          }
          float g = op == ReduceOp::Mean ? dy[i] / float(C) : dy[i];
          vec_loop<S>(0, C, [&](auto l, int64_t c) {
            using L = decltype(l);
            L::store(drow + c, L::add(L::load(drow + c), L::set1(g)));
          });
        },
        C);
  });
}

template <class S>
double sum_squares(DType dt, const void* x, int64_t n, int threads) {
  int64_t nchunks = (n + kSumSquaresChunk - 1) / kSumSquaresChunk;
  Buf<double> part(nchunks);
  with_dtype(dt, [&](auto t) {
    using T = decltype(t);
    auto px = static_cast<const T*>(x);
    parallel_items(nchunks, threads, [&](int64_t c) {
      int64_t lo = c * kSumSquaresChunk, hi = imin(n, lo + kSumSquaresChunk);
      auto a0 = S::dzero(), a1 = S::dzero(), a2 = S::dzero(), a3 = S::dzero();
      int64_t i = lo;
      for (; i + 2 * S::W <= hi; i += 2 * S::W) {
        S::sq_acc(a0, a1, S::load(px + i));
        S::sq_acc(a2, a3, S::load(px + i + S::W));
      }
      for (; i + S::W <= hi; i += S::W) S::sq_acc(a0, a1, S::load(px + i));
      double s = S::dhsum(a0) + S::dhsum(a1) + S::dhsum(a2) + S::dhsum(a3);
      for (; i < hi; ++i) {
        double v = Scalar::load(px + i);
        s += v * v;
      }
      part[c] = s;
    });
  });
  double total = 0.0;
  for (int64_t c = 0; c < nchunks; ++c) total += part[c];
  return total;
}

}  // namespace keel::backend::cpu::KEEL_CPU_ISA
