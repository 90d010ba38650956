// LayerNorm and RMSNorm over rows of x (N, C), forward and accumulating
// backward. Rows are independent work items; the weight/bias gradients are
// column sums done by column_reduce so they do not depend on thread count.
#pragma once
#include "backend/cpu/cpu_column_reduce.h"
#include "backend/cpu/simd.h"

namespace keel::backend::cpu::KEEL_CPU_ISA {

template <class S, class T>
void layernorm_fwd_t(const T* x, const T* w, const T* b, T* y, float* mean, float* rstd, int64_t N,
                     int64_t C, float eps, int threads) {
  parallel_items(
      N, threads,
      [&](int64_t i) {
        const T* xr = x + i * C;
        T* yr = y + i * C;
        float m = row_sum<S>(C, [&](auto l, int64_t c) { return decltype(l)::load(xr + c); }) / C;
        float var = row_sum<S>(C,
                               [&](auto l, int64_t c) {
                                 using L = decltype(l);
                                 auto d = L::sub(L::load(xr + c), L::set1(m));
                                 return L::mul(d, d);
                               }) /
                    C;
        float rs = 1.f / std::sqrt(var + eps);
        mean[i] = m;
        rstd[i] = rs;
        vec_loop<S>(0, C, [&](auto l, int64_t c) {
          using L = decltype(l);
          auto xh = L::mul(L::sub(L::load(xr + c), L::set1(m)), L::set1(rs));
          auto out = b ? L::fma(xh, L::load(w + c), L::load(b + c)) : L::mul(xh, L::load(w + c));
          L::store(yr + c, out);
        });
      },
      C);
}

// Per row: xhat = (x - mean) rstd, g = dy w,
// dx += (g - mean(g) - xhat mean(g xhat)) rstd, dw += dy xhat, db += dy.
template <class S, class T>
void layernorm_bwd_t(const T* dy, const T* x, const T* w, const float* mean, const float* rstd,
                     T* dx, float* dw, float* db, int64_t N, int64_t C, int threads) {
  int64_t width = db ? 2 * C : C;
  Buf<float> total(width);
  column_reduce<S>(N, width, threads, total.p, [&](int64_t i, float* part) {
    const T* dyr = dy + i * C;
    const T* xr = x + i * C;
    T* dxr = dx + i * C;
    float m = mean[i], rs = rstd[i];
    Sums2 sums = row_sum2<S>(C, [&](auto l, int64_t c, auto& sg, auto& sgx) {
      using L = decltype(l);
      auto g = L::mul(L::load(dyr + c), L::load(w + c));
      auto xh = L::mul(L::sub(L::load(xr + c), L::set1(m)), L::set1(rs));
      sg = L::add(sg, g);
      sgx = L::fma(g, xh, sgx);
    });
    float a = sums.a / C, bb = sums.b / C;
    vec_loop<S>(0, C, [&](auto l, int64_t c) {
      using L = decltype(l);
      auto d = L::load(dyr + c);
      auto xh = L::mul(L::sub(L::load(xr + c), L::set1(m)), L::set1(rs));
      auto g = L::mul(d, L::load(w + c));
      auto t = L::sub(L::sub(g, L::set1(a)), L::mul(xh, L::set1(bb)));
      L::store(dxr + c, L::fma(t, L::set1(rs), L::load(dxr + c)));
      L::store(part + c, L::fma(d, xh, L::load(part + c)));
      if (db) L::store(part + C + c, L::add(L::load(part + C + c), d));
    });
  });
  add_into<S>(dw, total.p, C);
  if (db) add_into<S>(db, total.p + C, C);
}

template <class S, class T>
void rmsnorm_fwd_t(const T* x, const T* w, T* y, float* rstd, int64_t N, int64_t C, float eps,
                   int threads) {
  parallel_items(
      N, threads,
      [&](int64_t i) {
        const T* xr = x + i * C;
        T* yr = y + i * C;
        float ms = row_sum<S>(C,
                              [&](auto l, int64_t c) {
                                using L = decltype(l);
                                auto v = L::load(xr + c);
                                return L::mul(v, v);
                              }) /
                   C;
        float rs = 1.f / std::sqrt(ms + eps);
        rstd[i] = rs;
        vec_loop<S>(0, C, [&](auto l, int64_t c) {
          using L = decltype(l);
          L::store(yr + c, L::mul(L::mul(L::load(xr + c), L::set1(rs)), L::load(w + c)));
        });
      },
      C);
}

// Per row: xhat = x rstd, g = dy w, dx += (g - xhat mean(g xhat)) rstd, dw += dy xhat.
template <class S, class T>
void rmsnorm_bwd_t(const T* dy, const T* x, const T* w, const float* rstd, T* dx, float* dw,
                   int64_t N, int64_t C, int threads) {
  Buf<float> total(C);
  column_reduce<S>(N, C, threads, total.p, [&](int64_t i, float* part) {
    const T* dyr = dy + i * C;
    const T* xr = x + i * C;
    T* dxr = dx + i * C;
    float rs = rstd[i];
    float sgx = row_sum<S>(C, [&](auto l, int64_t c) {
      using L = decltype(l);
      auto xh = L::mul(L::load(xr + c), L::set1(rs));
      return L::mul(L::mul(L::load(dyr + c), L::load(w + c)), xh);
    });
    float bb = sgx / C;
    vec_loop<S>(0, C, [&](auto l, int64_t c) {
      using L = decltype(l);
      auto d = L::load(dyr + c);
      auto xh = L::mul(L::load(xr + c), L::set1(rs));
      auto t = L::sub(L::mul(d, L::load(w + c)), L::mul(xh, L::set1(bb)));
      L::store(dxr + c, L::fma(t, L::set1(rs), L::load(dxr + c)));
      L::store(part + c, L::fma(d, xh, L::load(part + c)));
    });
  });
  add_into<S>(dw, total.p, C);
}

template <class S>
void layernorm_forward(DType dt, const void* x, const void* w, const void* b, void* y, float* mean,
                       float* rstd, int64_t N, int64_t C, float eps, int threads) {
  with_dtype(dt, [&](auto t) {
    using T = decltype(t);
    layernorm_fwd_t<S>(static_cast<const T*>(x), static_cast<const T*>(w), static_cast<const T*>(b),
                       static_cast<T*>(y), mean, rstd, N, C, eps, threads);
  });
}
template <class S>
void layernorm_backward(DType dt, const void* dy, const void* x, const void* w, const float* mean,
                        const float* rstd, void* dx, float* dw, float* db, int64_t N, int64_t C,
                        int threads) {
  with_dtype(dt, [&](auto t) {
    using T = decltype(t);
    layernorm_bwd_t<S>(static_cast<const T*>(dy), static_cast<const T*>(x),
                       static_cast<const T*>(w), mean, rstd, static_cast<T*>(dx), dw, db, N, C,
                       threads);
  });
}
template <class S>
void rmsnorm_forward(DType dt, const void* x, const void* w, void* y, float* rstd, int64_t N,
                     int64_t C, float eps, int threads) {
  with_dtype(dt, [&](auto t) {
    using T = decltype(t);
    rmsnorm_fwd_t<S>(static_cast<const T*>(x), static_cast<const T*>(w), static_cast<T*>(y), rstd,
                     N, C, eps, threads);
  });
}
template <class S>
void rmsnorm_backward(DType dt, const void* dy, const void* x, const void* w, const float* rstd,
                      void* dx, float* dw, int64_t N, int64_t C, int threads) {
  with_dtype(dt, [&](auto t) {
    using T = decltype(t);
    rmsnorm_bwd_t<S>(static_cast<const T*>(dy), static_cast<const T*>(x), static_cast<const T*>(w),
                     rstd, static_cast<T*>(dx), dw, N, C, threads);
  });
}

}  // namespace keel::backend::cpu::KEEL_CPU_ISA
