// Elementwise add, the accumulate used for every gradient (y += alpha x), and
// bias add with its column-sum backward.
#pragma once
#include "backend/cpu/cpu_column_reduce.h"
#include "backend/cpu/simd.h"

namespace keel::backend::cpu::KEEL_CPU_ISA {

template <class S>
void add(DType dt, const void* a, const void* b, void* y, int64_t n, int threads) {
  with_dtype(dt, [&](auto t) {
    using T = decltype(t);
    auto pa = static_cast<const T*>(a);
    auto pb = static_cast<const T*>(b);
    auto py = static_cast<T*>(y);
    parallel_chunks(n, kElemChunk, threads, [&](int64_t lo, int64_t hi) {
      vec_loop<S>(lo, hi, [&](auto l, int64_t i) {
        using L = decltype(l);
        L::store(py + i, L::add(L::load(pa + i), L::load(pb + i)));
      });
    });
  });
}

template <class S>
void accumulate(DType dt, const void* x, void* y, int64_t n, float alpha, int threads) {
  with_dtype(dt, [&](auto t) {
    using T = decltype(t);
    auto px = static_cast<const T*>(x);
    auto py = static_cast<T*>(y);
    parallel_chunks(n, kElemChunk, threads, [&](int64_t lo, int64_t hi) {
      vec_loop<S>(lo, hi, [&](auto l, int64_t i) {
        using L = decltype(l);
        L::store(py + i, L::fma(L::set1(alpha), L::load(px + i), L::load(py + i)));
      });
    });
  });
}

// y[N, C] += bias[C]
template <class S>
void bias_add(DType dt, void* y, const void* bias, int64_t N, int64_t C, int threads) {
  with_dtype(dt, [&](auto t) {
    using T = decltype(t);
    auto py = static_cast<T*>(y);
    auto pb = static_cast<const T*>(bias);
    int64_t rows_per = imax(1, kElemChunk / imax(C, 1));
    parallel_chunks(N, rows_per, threads, [&](int64_t r0, int64_t r1) {
      for (int64_t i = r0; i < r1; ++i) {
        T* row = py + i * C;
        vec_loop<S>(0, C, [&](auto l, int64_t c) {
          using L = decltype(l);
          L::store(row + c, L::add(L::load(row + c), L::load(pb + c)));
        });
      }
    });
  });
}

// dbias[c] += sum_i dy[i, c]
template <class S>
void bias_backward(DType dt, const void* dy, float* dbias, int64_t N, int64_t C, int threads) {
  with_dtype(dt, [&](auto t) {
    using T = decltype(t);
    auto pdy = static_cast<const T*>(dy);
    Buf<float> total(C);
    column_reduce<S>(N, C, threads, total.p, [&](int64_t i, float* part) {
      const T* row = pdy + i * C;
      vec_loop<S>(0, C, [&](auto l, int64_t c) {
        using L = decltype(l);
        L::store(part + c, L::add(L::load(part + c), L::load(row + c)));
      });
    });
    add_into<S>(dbias, total.p, C);
  });
}

}  // namespace keel::backend::cpu::KEEL_CPU_ISA
