// Rotary embedding over (B, T, NH, HS) rows, rotating adjacent pairs. The
// cos/sin table is built in double (angles at large positions lose digits in
// float), shared by every batch row and head, and kept for the next call at
// the same positions.
#pragma once
#include <vector>

#include "backend/cpu/simd.h"

namespace keel::backend::cpu::KEEL_CPU_ISA {

// cs[t, d] = cos(angle(t, d/2)); sn[t, d] = -sin for even d, +sin for odd d,
// so y = x * cs + swap_pairs(x) * sn rotates each pair by +angle.
inline void rope_table(const RopeArgs& a, float* cs, float* sn, int threads) {
  int64_t HS = a.HS;
  parallel_items(
      a.T, threads,
      [&](int64_t t) {
        double pos = double(a.pos0 + t);
        for (int64_t i = 0; i < HS / 2; ++i) {
          double ang = pos * std::pow(double(a.theta), -2.0 * double(i) / double(HS));
          float c = float(std::cos(ang)), s = float(std::sin(ang));
          cs[t * HS + 2 * i] = c;
          cs[t * HS + 2 * i + 1] = c;
          sn[t * HS + 2 * i] = -s;
          sn[t * HS + 2 * i + 1] = s;
        }
      },
      a.HS);
}

// The table of the last call on this thread, kept: a decode step rotates
// every layer's q and k at the same position, and the table (a pow, cos and
// sin per pair) cost most of a decode-sized call (3.5 us, measured).
struct RopeTable {
  int64_t pos0 = -1, T = 0, HS = 0;
  float theta = 0.f;
  std::vector<float> cs, sn;
};
inline const RopeTable& rope_table_for(const RopeArgs& a, int threads) {
  thread_local RopeTable t;
  if (t.pos0 != a.pos0 || t.T != a.T || t.HS != a.HS || !(t.theta == a.theta)) {
    t.cs.resize(size_t(a.T * a.HS));
    t.sn.resize(size_t(a.T * a.HS));
    rope_table(a, t.cs.data(), t.sn.data(), threads);
    t.pos0 = a.pos0;
    t.T = a.T;
    t.HS = a.HS;
    t.theta = a.theta;
  }
  return t;
}

// out = rotate(in) (sign = +1) or out += rotate(in, -angle) (sign = -1, backward).
template <class S, class T, bool kBackward>
void rope_t(const RopeArgs& a, const T* in, T* out, int threads) {
  int64_t HS = a.HS;
  const RopeTable& table = rope_table_for(a, threads);
  const float *cs = table.cs.data(), *sn = table.sn.data();
  parallel_items(
      a.B * a.T, threads,
      [&](int64_t bt) {
        int64_t b = bt / a.T, t = bt % a.T;
        const float* c = cs + t * HS;
        const float* s = sn + t * HS;
        for (int64_t h = 0; h < a.NH; ++h) {
          int64_t off = b * a.batch_stride + t * a.row_stride + h * HS;
          const T* x = in + off;
          T* y = out + off;
          int64_t d = 0;
          if constexpr (S::W > 1) {
            for (; d + S::W <= HS; d += S::W) {
              auto v = S::load(x + d);
              auto r = S::mul(S::swap_pairs(v), S::load(s + d));
              if constexpr (kBackward) {
                auto acc = S::fma(v, S::load(c + d), S::load(y + d));
                S::store(y + d, S::sub(acc, r));
              } else {
                S::store(y + d, S::fma(v, S::load(c + d), r));
              }
            }
          }
          for (; d < HS; d += 2) {
            float x0 = Scalar::load(x + d), x1 = Scalar::load(x + d + 1);
            float r0 = x1 * s[d], r1 = x0 * s[d + 1];
            if constexpr (kBackward) {
              Scalar::store(y + d, std::fma(x0, c[d], Scalar::load(y + d)) - r0);
              Scalar::store(y + d + 1, std::fma(x1, c[d + 1], Scalar::load(y + d + 1)) - r1);
            } else {
              Scalar::store(y + d, std::fma(x0, c[d], r0));
              Scalar::store(y + d + 1, std::fma(x1, c[d + 1], r1));
            }
          }
        }
      },
      a.NH * a.HS);
}

template <class S>
void rope_forward(const RopeArgs& a, const void* x, void* y, int threads) {
  with_dtype(a.dt, [&](auto t) {
    using T = decltype(t);
    rope_t<S, T, false>(a, static_cast<const T*>(x), static_cast<T*>(y), threads);
  });
}
template <class S>
void rope_backward(const RopeArgs& a, const void* dy, void* dx, int threads) {
  with_dtype(a.dt, [&](auto t) {
    using T = decltype(t);
    rope_t<S, T, true>(a, static_cast<const T*>(dy), static_cast<T*>(dx), threads);
  });
}

}  // namespace keel::backend::cpu::KEEL_CPU_ISA
