// Causal attention's FLOP rate on a backend at one shape, forward and backward,
// so bench_attention and bench_train compare it with the GEMM rate the same
// way. FLOPs count the products over visible (query, key) pairs only: 2 in
// the forward (QK^T, PV), 5 in the backward (QK^T again, dO V^T, P^T dO,
// dS K, dS^T Q), 2 * HS each.
#pragma once
#include <time.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <vector>

#include "backend/backend.h"
#include "core/dtype.h"

namespace keel::bench {

struct AttentionShape {
  int64_t B, T, NH, NKV, HS;
};

// Wall time, or the calling thread's CPU time: on a loaded machine only the
// latter compares kernels, and only with one thread (workers' time is not counted).
enum class BenchClock { Wall, ThreadCpu };

inline double bench_now(BenchClock c) {
  if (c == BenchClock::ThreadCpu) {
    timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct AttentionRate {
  double fwd_seconds = 0, bwd_seconds = 0;  // one call, best of the repetitions
  double fwd_gflops = 0, bwd_gflops = 0;
};

inline double attention_pair_flops(const AttentionShape& s) {
  return 2.0 * double(s.B * s.NH) * double(s.T) * double(s.T + 1) / 2 * double(s.HS);
}

// Best time of each direction over about `seconds` of repetitions (at least 2).
// cold: before each call, 64 MiB are written outside the timing, so q, k, v
// and the gradients come from memory as they do inside a training step.
inline AttentionRate measure_attention(backend::Backend& be, const AttentionShape& s, DType dt,
                                       double seconds, BenchClock clock = BenchClock::Wall,
                                       bool cold = false) {
  backend::AttentionArgs a;
  a.B = s.B, a.Tq = a.Tk = s.T, a.NH = s.NH, a.NKV = s.NKV, a.HS = s.HS;
  a.q_row_stride = s.NH * s.HS, a.q_batch_stride = s.T * a.q_row_stride;
  a.kv_row_stride = s.NKV * s.HS, a.kv_batch_stride = s.T * a.kv_row_stride;
  a.scale = 1.f / 8.f;
  a.dt = dt;
  const size_t es = dtype_size(dt);
  const size_t nq = size_t(s.B * s.T * s.NH * s.HS), nkv = size_t(s.B * s.T * s.NKV * s.HS);
  // Values in [-1, 1) in either storage type: a bf16 pattern read as such.
  auto fill = [&](size_t n, uint32_t seed) {
    std::vector<uint8_t> b(n * es);
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; ++i) {
      x = x * 1664525u + 1013904223u;
      const float f = float(x >> 8) / float(1u << 24) * 2.f - 1.f;
      if (dt == DType::BF16) {
        const uint16_t h = f32_to_bf16(f);
        std::memcpy(b.data() + i * 2, &h, 2);
      } else {
        std::memcpy(b.data() + i * 4, &f, 4);
      }
    }
    return b;
  };
  auto q = fill(nq, 1), k = fill(nkv, 2), v = fill(nkv, 3), dout = fill(nq, 4);
  std::vector<uint8_t> o(nq * es), dq(nq * es), dk(nkv * es), dv(nkv * es);
  std::vector<float> lse(size_t(s.B * s.NH * s.T));
  std::vector<uint8_t> evict(cold ? size_t(64) << 20 : 0);
  auto best_of = [&](auto&& call) {
    double best = 1e30, spent = 0;
    for (int rep = 0; rep < 2 || spent < seconds; ++rep) {
      if (cold) std::memset(evict.data(), rep & 0xff, evict.size());
      const double t0 = bench_now(clock);
      call();
      const double dt_s = bench_now(clock) - t0;
      best = dt_s < best ? dt_s : best;
      spent += dt_s;
    }
    return best;
  };
  AttentionRate r;
  r.fwd_seconds =
      best_of([&] { be.attention_forward(a, q.data(), k.data(), v.data(), o.data(), lse.data()); });
  r.bwd_seconds = best_of([&] {
    be.attention_backward(a, dout.data(), q.data(), k.data(), v.data(), o.data(), lse.data(),
                          dq.data(), dk.data(), dv.data());
  });
  const double pair = attention_pair_flops(s);
  r.fwd_gflops = 2 * pair / r.fwd_seconds / 1e9;
  r.bwd_gflops = 5 * pair / r.bwd_seconds / 1e9;
  return r;
}

}  // namespace keel::bench
