// Decoupled AdamW on f32 master weights, one pass over param, grad, m and v
// (plus the optional bf16 copy of the weights and the moments' digests), f32
// arithmetic.
#pragma once
#include <vector>

#include "backend/cpu/simd.h"
#include "core/piece_digest.h"
// XXH3_state_t lives behind XXH_STATIC_LINKING_ONLY.
#ifndef XXH_STATIC_LINKING_ONLY
#define XXH_STATIC_LINKING_ONLY
#endif
#include <xxh_x86dispatch.h>

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
  const auto update = [&](int64_t lo, int64_t hi) {
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
  };
  if (!a.moment_digests) {
    parallel_chunks(a.n, kElemChunk, threads, update);
    return;
  }
  // The SDC seal's digests, taken while the bytes pass through anyway: each
  // 16 KiB run of m and v is hashed as loaded (before) and as stored (after),
  // still in L1. Items are whole digest pieces, so the value is that of
  // core/piece_digest.h whatever the thread count.
  constexpr int64_t kPiece = int64_t(kDigestPiece / sizeof(float)), kRun = 4096;
  const int64_t pieces = (a.n + kPiece - 1) / kPiece;
  std::vector<uint64_t> d(size_t(4 * pieces));
  parallel_items(
      pieces, threads,
      [&](int64_t p) {
        XXH3_state_t st[4];
        for (auto& s : st) XXH3_64bits_reset(&s);
        const int64_t end = imin(a.n, (p + 1) * kPiece);
        for (int64_t lo = p * kPiece; lo < end; lo += kRun) {
          const int64_t hi = imin(end, lo + kRun);
          const size_t bytes = size_t(hi - lo) * sizeof(float);
          XXH3_64bits_update(&st[0], m + lo, bytes);
          XXH3_64bits_update(&st[1], v + lo, bytes);
          update(lo, hi);
          XXH3_64bits_update(&st[2], m + lo, bytes);
          XXH3_64bits_update(&st[3], v + lo, bytes);
        }
        for (int k = 0; k < 4; ++k) d[size_t(k * pieces + p)] = XXH3_64bits_digest(&st[k]);
      },
      kPiece);
  for (int k = 0; k < 4; ++k)
    a.moment_digests[k] = combine_piece_digests(d.data() + k * pieces, size_t(pieces));
}

}  // namespace keel::backend::cpu::KEEL_CPU_ISA
