// Causal attention's FLOP rate on the cpu backend against the GEMM rate of the
// same dtype, measured in the same run: GPT-2 small's heads at T=1024 and a
// grouped-query Llama shape at T=2048, forward and backward, f32 and bf16.
// Prints one JSON line. Usage:
//   bench_attention [--seconds S] [--cpu-time] [--cold] [--dtype f32|bf16]
// --cpu-time: one thread, timed by its CPU time (for comparing kernels on a
// loaded machine); the GEMM beside it is timed the same way.
// --cold: the caches are flushed before each call (inputs from memory, as in
// a training step); the GEMM beside it stays hot.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include <nlohmann/json.hpp>

#include "attention_rate.h"
#include "backend/ops.h"
#include "core/rng.h"
#include "train/peak_flops.h"

using namespace keel;

namespace {

// Best n^3 GEMM rate in dtype dt by the thread's CPU time (one thread).
double gemm_gflops_cpu_time(backend::Backend& be, DType dt, int n, double seconds) {
  const Shape s{n, n};
  Tensor a = Tensor::zeros(s, DType::F32), b = Tensor::zeros(s, DType::F32),
         c = Tensor::zeros(s, DType::F32);
  Rng(0, 0).fill_uniform(a.data<float>(), a.numel(), -1.f, 1.f);
  Rng(0, 1).fill_uniform(b.data<float>(), b.numel(), -1.f, 1.f);
  if (dt != DType::F32) a = a.to(dt), b = b.to(dt);
  ops::matmul(be, a, false, b, false, c);
  double best = 1e30, spent = 0;
  for (int rep = 0; rep < 2 || spent < seconds; ++rep) {
    const double t0 = bench::bench_now(bench::BenchClock::ThreadCpu);
    ops::matmul(be, a, false, b, false, c);
    const double dt_s = bench::bench_now(bench::BenchClock::ThreadCpu) - t0;
    best = dt_s < best ? dt_s : best;
    spent += dt_s;
  }
  return 2.0 * double(n) * n * n / best / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 1.0;
  bool cpu_time = false, cold = false;
  std::string only_dtype;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--seconds") && i + 1 < argc) {
      seconds = std::atof(argv[++i]);
    } else if (!std::strcmp(argv[i], "--cpu-time")) {
      cpu_time = true;
    } else if (!std::strcmp(argv[i], "--cold")) {
      cold = true;
    } else if (!std::strcmp(argv[i], "--dtype") && i + 1 < argc) {
      only_dtype = argv[++i];
    } else {
      std::fprintf(stderr, "usage: %s [--seconds S] [--cpu-time] [--cold] [--dtype f32|bf16]\n",
                   argv[0]);
      return 2;
    }
  }
  auto be = backend::make_backend("cpu");
  const char* th = std::getenv("KEEL_BENCH_THREADS");
  be->set_threads(cpu_time ? 1 : th ? std::atoi(th) : 2);
  const bench::BenchClock clock = cpu_time ? bench::BenchClock::ThreadCpu : bench::BenchClock::Wall;
  struct Case {
    const char* name;
    bench::AttentionShape shape;
  };
  const Case cases[] = {{"gpt2 B1 T1024 NH12 HS64", {1, 1024, 12, 12, 64}},
                        {"llama B1 T2048 NH12 NKV4 HS64", {1, 2048, 12, 4, 64}}};
  nlohmann::ordered_json out;
  out["bench"] = "attention";
  out["flops"] = "visible pairs only: forward 2 products, backward 5, 2*HS each";
  out["clock"] = cpu_time ? "thread cpu time, 1 thread" : "wall";
  out["caches"] = cold ? "flushed before each call" : "warm";
  for (DType dt : {DType::F32, DType::BF16}) {
    const std::string dn(dtype_name(dt));
    if (!only_dtype.empty() && only_dtype != dn) continue;
    const double gemm = cpu_time ? gemm_gflops_cpu_time(*be, dt, 1024, seconds)
                                 : train::measure_gemm_gflops(*be, dt, 1024, seconds);
    out[dn + "_gemm_gflops"] = gemm;
    for (const Case& c : cases) {
      const bench::AttentionRate r =
          bench::measure_attention(*be, c.shape, dt, seconds, clock, cold);
      nlohmann::ordered_json j;
      j["case"] = c.name;
      j["dtype"] = dn;
      j["fwd_ms"] = r.fwd_seconds * 1e3;
      j["bwd_ms"] = r.bwd_seconds * 1e3;
      j["fwd_gflops"] = r.fwd_gflops;
      j["bwd_gflops"] = r.bwd_gflops;
      j["fwd_vs_gemm"] = r.fwd_gflops / gemm;
      j["bwd_vs_gemm"] = r.bwd_gflops / gemm;
      std::fprintf(stderr, "%s\n", j.dump().c_str());
      out["cases"].push_back(j);
    }
  }
  std::printf("%s\n", out.dump().c_str());
  return 0;
}
