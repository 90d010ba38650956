// The memory-bound training kernels (and attention) through the Backend
// interface at sizes far beyond the caches, reported as bytes moved per second
// (each input read once, each output written once; accumulated outputs count
// as read + write) so scripts/bench.sh can compare them with STREAM.
#include <cmath>
#include <exception>
#include <functional>
#include <string>

#include "bench_util.h"

namespace {

using keel::DType;
namespace kb = keel::backend;

// Runs fn repeatedly; any keel error (kernel missing) becomes a skipped entry.
void run(benchmark::State& st, const std::function<void()>& fn, double bytes, double flops) {
  try {
    fn();
  } catch (const std::exception& e) {
    st.SkipWithError(e.what());
    return;
  }
  for (auto _ : st) {
    fn();
    benchmark::ClobberMemory();
  }
  if (bytes > 0) keel::bench::set_bytes(st, bytes);
  if (flops > 0) keel::bench::set_flops(st, flops);
}

constexpr int64_t kRows = 16384, kC = 768;    // 48 MiB of f32 activations
constexpr int64_t kN = kRows * kC;            // elementwise length
constexpr int64_t kCeN = 256, kCeV = 50304;   // cross-entropy logits, 49 MiB
constexpr int64_t kAdamN = int64_t(1) << 24;  // 16M parameters

void reg(const std::string& name, std::function<void(benchmark::State&)> f) {
  benchmark::RegisterBenchmark(name.c_str(), [f](benchmark::State& st) { f(st); })
      ->UseRealTime()
      ->MinTime(0.2)
      ->Unit(benchmark::kMillisecond);
}

}  // namespace

int main(int argc, char** argv) {
  auto& be = keel::bench::cpu();
  // Buffers shared by the elementwise benchmarks (allocated once, lazily).
  static std::vector<float> x, y, z, w, b, mean, rstd, dw, db;
  auto ensure = [] {
    if (!x.empty()) return;
    x = keel::bench::filled(size_t(kN), 1.f, 1);
    y = keel::bench::filled(size_t(kN), 1.f, 2);
    z = keel::bench::filled(size_t(kN), 1.f, 3);
    w = keel::bench::filled(size_t(kC), 1.f, 4);
    b = keel::bench::filled(size_t(kC), 1.f, 5);
    mean.resize(kRows);
    rstd.resize(kRows);
    dw.resize(kC);
    db.resize(kC);
  };
  const double n4 = double(kN) * 4;
  reg("add/f32/12582912", [&](benchmark::State& st) {
    ensure();
    run(
        st, [&] { be.add(DType::F32, x.data(), y.data(), z.data(), kN); }, 3 * n4, 0);
  });
  reg("gelu_forward/f32/12582912", [&](benchmark::State& st) {
    ensure();
    run(
        st, [&] { be.gelu_forward(DType::F32, x.data(), y.data(), kN); }, 2 * n4, 0);
  });
  reg("gelu_backward/f32/12582912", [&](benchmark::State& st) {
    ensure();
    run(
        st, [&] { be.gelu_backward(DType::F32, x.data(), y.data(), z.data(), kN); }, 4 * n4, 0);
  });
  // bf16 activations move half the bytes, so these show whether the rounding
  // store keeps up with memory.
  static std::vector<uint16_t> xh, yh, zh;
  auto ensure_bf16 = [] {
    if (!xh.empty()) return;
    xh = keel::bench::filled_bf16(size_t(kN), 1.f, 1);
    yh = keel::bench::filled_bf16(size_t(kN), 1.f, 2);
    zh = keel::bench::filled_bf16(size_t(kN), 1.f, 3);
  };
  reg("gelu_forward/bf16/12582912", [&](benchmark::State& st) {
    ensure_bf16();
    run(
        st, [&] { be.gelu_forward(DType::BF16, xh.data(), yh.data(), kN); }, n4, 0);
  });
  reg("gelu_backward/bf16/12582912", [&](benchmark::State& st) {
    ensure_bf16();
    run(
        st, [&] { be.gelu_backward(DType::BF16, xh.data(), yh.data(), zh.data(), kN); }, 2 * n4, 0);
  });
  reg("swiglu_forward/bf16/12582912", [&](benchmark::State& st) {
    ensure_bf16();
    run(
        st, [&] { be.swiglu_forward(DType::BF16, xh.data(), yh.data(), zh.data(), kN); }, 1.5 * n4,
        0);
  });
  reg("add/bf16/12582912", [&](benchmark::State& st) {
    ensure_bf16();
    run(
        st, [&] { be.add(DType::BF16, xh.data(), yh.data(), zh.data(), kN); }, 1.5 * n4, 0);
  });
  reg("swiglu_forward/f32/12582912", [&](benchmark::State& st) {
    ensure();
    run(
        st, [&] { be.swiglu_forward(DType::F32, x.data(), y.data(), z.data(), kN); }, 3 * n4, 0);
  });
  reg("layernorm_forward/f32/16384x768", [&](benchmark::State& st) {
    ensure();
    run(
        st,
        [&] {
          be.layernorm_forward(DType::F32, x.data(), w.data(), b.data(), y.data(), mean.data(),
                               rstd.data(), kRows, kC, 1e-5f);
        },
        2 * n4, 0);
  });
  reg("layernorm_backward/f32/16384x768", [&](benchmark::State& st) {
    ensure();
    run(
        st,
        [&] {
          be.layernorm_backward(DType::F32, y.data(), x.data(), w.data(), mean.data(), rstd.data(),
                                z.data(), dw.data(), db.data(), kRows, kC);
        },
        4 * n4, 0);
  });
  reg("rmsnorm_forward/f32/16384x768", [&](benchmark::State& st) {
    ensure();
    run(
        st,
        [&] {
          be.rmsnorm_forward(DType::F32, x.data(), w.data(), y.data(), rstd.data(), kRows, kC,
                             1e-5f);
        },
        2 * n4, 0);
  });
  reg("rmsnorm_backward/f32/16384x768", [&](benchmark::State& st) {
    ensure();
    run(
        st,
        [&] {
          be.rmsnorm_backward(DType::F32, y.data(), x.data(), w.data(), rstd.data(), z.data(),
                              dw.data(), kRows, kC);
        },
        4 * n4, 0);
  });
  reg("cross_entropy_forward/f32/256x50304", [&](benchmark::State& st) {
    auto logits = keel::bench::filled(size_t(kCeN * kCeV), 4.f, 6);
    std::vector<int32_t> t(kCeN);
    for (int64_t i = 0; i < kCeN; ++i) t[i] = int32_t((i * 7919) % kCeV);
    std::vector<float> loss(kCeN), lse(kCeN);
    run(
        st,
        [&] {
          be.cross_entropy_forward(DType::F32, logits.data(), t.data(), loss.data(), lse.data(),
                                   kCeN, kCeV);
        },
        double(kCeN * kCeV) * 4, 0);
  });
  reg("cross_entropy_backward/f32/256x50304", [&](benchmark::State& st) {
    auto logits = keel::bench::filled(size_t(kCeN * kCeV), 4.f, 6);
    std::vector<float> dl(static_cast<size_t>(kCeN * kCeV)), loss(kCeN), lse(kCeN),
        dloss(kCeN, 1.f / kCeN);
    std::vector<int32_t> t(kCeN);
    for (int64_t i = 0; i < kCeN; ++i) t[i] = int32_t((i * 7919) % kCeV);
    try {
      be.cross_entropy_forward(DType::F32, logits.data(), t.data(), loss.data(), lse.data(), kCeN,
                               kCeV);
    } catch (const std::exception& e) {
      return st.SkipWithError(e.what());
    }
    run(
        st,
        [&] {
          be.cross_entropy_backward(DType::F32, logits.data(), t.data(), lse.data(), dloss.data(),
                                    dl.data(), kCeN, kCeV);
        },
        double(kCeN * kCeV) * 12, 0);
  });
  reg("adamw/f32/16777216", [&](benchmark::State& st) {
    auto p = keel::bench::filled(size_t(kAdamN), 1.f, 7),
         g = keel::bench::filled(size_t(kAdamN), 1.f, 8);
    std::vector<float> m(static_cast<size_t>(kAdamN)), v(static_cast<size_t>(kAdamN));
    kb::AdamWArgs a;
    a.n = kAdamN;
    a.lr = 1e-4f;
    a.weight_decay = 0.1f;
    run(
        st, [&] { be.adamw_update(a, p.data(), g.data(), m.data(), v.data(), nullptr); },
        double(kAdamN) * 28, 0);  // read p, g, m, v; write p, m, v
  });
  // Causal attention at GPT-2 small sizes: compute-bound, reported in FLOP/s.
  for (DType dt : {DType::F32}) {
    reg("attention_forward/f32/B4xT256xNH12xHS64", [&, dt](benchmark::State& st) {
      kb::AttentionArgs a;
      a.B = 4;
      a.Tq = a.Tk = 256;
      a.NH = a.NKV = 12;
      a.HS = 64;
      a.q_row_stride = a.kv_row_stride = a.NH * a.HS;
      a.q_batch_stride = a.kv_batch_stride = a.Tq * a.NH * a.HS;
      a.scale = 0.125f;
      a.dt = dt;
      const size_t n = size_t(a.B * a.Tq * a.NH * a.HS);
      auto q = keel::bench::filled(n, 1.f, 1), k = keel::bench::filled(n, 1.f, 2),
           v = keel::bench::filled(n, 1.f, 3);
      std::vector<float> o(n), lse(static_cast<size_t>(a.B * a.NH * a.Tq));
      // QK^T and PV over the causal half: 2 * 2 * B * NH * T^2/2 * HS.
      const double flops = 2.0 * double(a.B * a.NH) * double(a.Tq) * double(a.Tk) * double(a.HS);
      run(
          st, [&] { be.attention_forward(a, q.data(), k.data(), v.data(), o.data(), lse.data()); },
          0, flops);
    });
  }
  benchmark::Initialize(&argc, argv);
  std::fprintf(stderr, "%s\n", be.describe().c_str());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
}
