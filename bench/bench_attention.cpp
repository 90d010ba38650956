// Causal attention's FLOP rate on the cpu backend against the GEMM rate of the
// same dtype, measured in the same run: GPT-2 small's heads at T=1024 and a
// grouped-query Llama shape at T=2048, forward and backward, f32 and bf16.
// Prints one JSON line. Usage: bench_attention [--seconds S]
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include <nlohmann/json.hpp>

#include "attention_rate.h"
#include "train/peak_flops.h"

using namespace keel;

int main(int argc, char** argv) {
  double seconds = 1.0;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--seconds") && i + 1 < argc) {
      seconds = std::atof(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: %s [--seconds S]\n", argv[0]);
      return 2;
    }
  }
  auto be = backend::make_backend("cpu");
  const char* th = std::getenv("KEEL_BENCH_THREADS");
  be->set_threads(th ? std::atoi(th) : 2);
  struct Case {
    const char* name;
    bench::AttentionShape shape;
  };
  const Case cases[] = {{"gpt2 B1 T1024 NH12 HS64", {1, 1024, 12, 12, 64}},
                        {"llama B1 T2048 NH12 NKV4 HS64", {1, 2048, 12, 4, 64}}};
  nlohmann::ordered_json out;
  out["bench"] = "attention";
  out["flops"] = "visible pairs only: forward 2 products, backward 5, 2*HS each";
  for (DType dt : {DType::F32, DType::BF16}) {
    const std::string dn(dtype_name(dt));
    const double gemm = train::measure_gemm_gflops(*be, dt, 1024, seconds);
    out[dn + "_gemm_gflops"] = gemm;
    for (const Case& c : cases) {
      const bench::AttentionRate r = bench::measure_attention(*be, c.shape, dt, seconds);
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
