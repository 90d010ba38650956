// Decoupled AdamW on f32 master weights, one pass over param, grad, m and v
// (plus the optional bf16 copy of the weights), f32 arithmetic.
#pragma once
#include "backend/cpu/simd.h"

namespace keel::backend::cpu::KEEL_CPU_ISA {

template <class S>
void adamw_update(const AdamWArgs& a, float* param, const float* grad, float* m, float* v,
                  uint16_t* param_bf16, int threads) {
  const float b1 = a.beta1, b2 = a.beta2;
  // Bias corrections in f64: beta^t for large t loses digits in f32.
  const float inv_bc1 = float(1.0 / (1.0 - std::pow(double(b1), double(a.t))));
  const float inv_bc2 = float(1.0 / (1.0 - std::pow(double(b2), double(a.t))));
  bf16_t* pb = reinterpret_cast<bf16_t*>(param_bf16);
  const bool keep_all = a.variance_keep == 1.f;
  const float keep = a.variance_keep, drop = 1.f - a.variance_keep;
  parallel_chunks(a.n, kElemChunk, threads, [&](int64_t lo, int64_t hi) {
    vec_loop<S>(lo, hi, [&](auto l, int64_t i) {
      using L = decltype(l);
      auto g = L::mul(L::load(grad + i), L::set1(a.grad_scale));
      auto mi = L::fma(L::set1(b1), L::load(m + i), L::mul(L::set1(1.f - b1), g));
      auto vi = L::fma(L::set1(b2), L::load(v + i), L::mul(L::set1(1.f - b2), L::mul(g, g)));
      auto mhat = L::mul(mi, L::set1(inv_bc1));
      auto vhat = L::mul(vi, L::set1(inv_bc2));
      if (!keep_all) vhat = L::fma(L::set1(keep), vhat, L::mul(L::set1(drop), L::mul(mhat, mhat)));
      auto p = L::load(param + i);
      auto upd =
          L::fma(L::set1(a.weight_decay), p, L::div(mhat, L::add(L::sqrt(vhat), L::set1(a.eps))));
      p = L::fma(L::set1(-a.lr), upd, p);
      L::store(m + i, mi);
      L::store(v + i, vi);
      L::store(param + i, p);
      if (pb) L::store(pb + i, p);
    });
  });
}

}  // namespace keel::backend::cpu::KEEL_CPU_ISA
