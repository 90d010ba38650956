// Elementwise activations (GELU tanh approximation, SiLU, SwiGLU) with their
// accumulating backwards, written once over the SIMD traits. Single pass, no
// temporaries: each element is loaded, transformed and stored once.
#pragma once
#include "backend/cpu/simd.h"

namespace keel::backend::cpu::KEEL_CPU_ISA {

// tanh(u) = 1 - 2 / (exp(2u) + 1): exact at both saturations, absolute error
// about 1e-7 near 0 (GELU only uses 1 + tanh, so that is what matters).
template <class L>
inline typename L::V tanh_v(typename L::V u) {
  auto e = exp_v<L>(L::add(u, u));
  return L::sub(L::set1(1.f), L::div(L::set1(2.f), L::add(e, L::set1(1.f))));
}

inline constexpr float kGeluK0 = 0.7978845608028654f;  // sqrt(2 / pi)
inline constexpr float kGeluK1 = 0.044715f;

template <class L>
inline typename L::V gelu_tanh_arg(typename L::V x) {
  auto x2 = L::mul(x, x);
  return L::mul(L::mul(L::set1(kGeluK0), x), L::fma(L::set1(kGeluK1), x2, L::set1(1.f)));
}

template <class L>
inline typename L::V sigmoid_v(typename L::V x) {
  auto e = exp_v<L>(L::sub(L::zero(), x));
  return L::div(L::set1(1.f), L::add(L::set1(1.f), e));
}

template <class S, class T>
void gelu_fwd_t(const T* x, T* y, int64_t n, int threads) {
  parallel_chunks(n, kElemChunk, threads, [&](int64_t lo, int64_t hi) {
    vec_loop<S>(lo, hi, [&](auto l, int64_t i) {
      using L = decltype(l);
      auto v = L::load(x + i);
      auto th = tanh_v<L>(gelu_tanh_arg<L>(v));
      L::store(y + i, L::mul(L::mul(L::set1(0.5f), v), L::add(L::set1(1.f), th)));
    });
  });
}

template <class S, class T>
void gelu_bwd_t(const T* x, const T* dy, T* dx, int64_t n, int threads) {
  parallel_chunks(n, kElemChunk, threads, [&](int64_t lo, int64_t hi) {
    vec_loop<S>(lo, hi, [&](auto l, int64_t i) {
      using L = decltype(l);
      auto v = L::load(x + i);
      auto th = tanh_v<L>(gelu_tanh_arg<L>(v));
      auto one = L::set1(1.f);
      // d/dx = 0.5 (1 + th) + 0.5 x (1 - th^2) k0 (1 + 3 k1 x^2)
      auto du = L::mul(L::set1(kGeluK0), L::fma(L::set1(3.f * kGeluK1), L::mul(v, v), one));
      auto sech2 = L::sub(one, L::mul(th, th));
      auto half = L::set1(0.5f);
      auto g = L::fma(L::mul(L::mul(half, v), sech2), du, L::mul(half, L::add(one, th)));
      L::store(dx + i, L::fma(L::load(dy + i), g, L::load(dx + i)));
    });
  });
}

template <class S, class T>
void silu_fwd_t(const T* x, T* y, int64_t n, int threads) {
  parallel_chunks(n, kElemChunk, threads, [&](int64_t lo, int64_t hi) {
    vec_loop<S>(lo, hi, [&](auto l, int64_t i) {
      using L = decltype(l);
      auto v = L::load(x + i);
      L::store(y + i, L::mul(v, sigmoid_v<L>(v)));
    });
  });
}

template <class S, class T>
void silu_bwd_t(const T* x, const T* dy, T* dx, int64_t n, int threads) {
  parallel_chunks(n, kElemChunk, threads, [&](int64_t lo, int64_t hi) {
    vec_loop<S>(lo, hi, [&](auto l, int64_t i) {
      using L = decltype(l);
      auto v = L::load(x + i);
      auto s = sigmoid_v<L>(v);
      // d/dx = s (1 + x (1 - s))
      auto g = L::mul(s, L::fma(v, L::sub(L::set1(1.f), s), L::set1(1.f)));
      L::store(dx + i, L::fma(L::load(dy + i), g, L::load(dx + i)));
    });
  });
}

template <class S, class T>
void swiglu_fwd_t(const T* gate, const T* up, T* y, int64_t n, int threads) {
  parallel_chunks(n, kElemChunk, threads, [&](int64_t lo, int64_t hi) {
    vec_loop<S>(lo, hi, [&](auto l, int64_t i) {
      using L = decltype(l);
      auto g = L::load(gate + i);
      L::store(y + i, L::mul(L::mul(g, sigmoid_v<L>(g)), L::load(up + i)));
    });
  });
}

template <class S, class T>
void swiglu_bwd_t(const T* gate, const T* up, const T* dy, T* dgate, T* dup, int64_t n,
                  int threads) {
  parallel_chunks(n, kElemChunk, threads, [&](int64_t lo, int64_t hi) {
    vec_loop<S>(lo, hi, [&](auto l, int64_t i) {
      using L = decltype(l);
      auto g = L::load(gate + i);
      auto u = L::load(up + i);
      auto d = L::load(dy + i);
      auto s = sigmoid_v<L>(g);
      auto one = L::set1(1.f);
      auto dsilu = L::mul(s, L::fma(g, L::sub(one, s), one));
      L::store(dgate + i, L::fma(L::mul(d, u), dsilu, L::load(dgate + i)));
      L::store(dup + i, L::fma(d, L::mul(g, s), L::load(dup + i)));
    });
  });
}

template <class S>
void gelu_forward(DType dt, const void* x, void* y, int64_t n, int threads) {
  with_dtype(dt, [&](auto t) {
    using T = decltype(t);
    gelu_fwd_t<S>(static_cast<const T*>(x), static_cast<T*>(y), n, threads);
  });
}
template <class S>
void gelu_backward(DType dt, const void* x, const void* dy, void* dx, int64_t n, int threads) {
  with_dtype(dt, [&](auto t) {
    using T = decltype(t);
    gelu_bwd_t<S>(static_cast<const T*>(x), static_cast<const T*>(dy), static_cast<T*>(dx), n,
                  threads);
  });
}
template <class S>
void silu_forward(DType dt, const void* x, void* y, int64_t n, int threads) {
  with_dtype(dt, [&](auto t) {
    using T = decltype(t);
    silu_fwd_t<S>(static_cast<const T*>(x), static_cast<T*>(y), n, threads);
  });
}
template <class S>
void silu_backward(DType dt, const void* x, const void* dy, void* dx, int64_t n, int threads) {
  with_dtype(dt, [&](auto t) {
    using T = decltype(t);
    silu_bwd_t<S>(static_cast<const T*>(x), static_cast<const T*>(dy), static_cast<T*>(dx), n,
                  threads);
  });
}
template <class S>
void swiglu_forward(DType dt, const void* gate, const void* up, void* y, int64_t n, int threads) {
  with_dtype(dt, [&](auto t) {
    using T = decltype(t);
    swiglu_fwd_t<S>(static_cast<const T*>(gate), static_cast<const T*>(up), static_cast<T*>(y), n,
                    threads);
  });
}
template <class S>
void swiglu_backward(DType dt, const void* gate, const void* up, const void* dy, void* dgate,
                     void* dup, int64_t n, int threads) {
  with_dtype(dt, [&](auto t) {
    using T = decltype(t);
    swiglu_bwd_t<S>(static_cast<const T*>(gate), static_cast<const T*>(up),
                    static_cast<const T*>(dy), static_cast<T*>(dgate), static_cast<T*>(dup), n,
                    threads);
  });
}

}  // namespace keel::backend::cpu::KEEL_CPU_ISA
