// GGUF block quantization (the export path of `keel export --dtype q4_k_m`
// and friends): one 768 x 3072 matrix of f32 weights per iteration, reported
// as f32 input bytes per second, for each codec and for the decode back to f32.
#include <string>
#include <vector>

#include "bench_util.h"
#include "io/gguf_kquants.h"

namespace {

using keel::io::GgmlType;

void quantize(benchmark::State& st, GgmlType t) {
  const auto w = keel::bench::filled(size_t(768) * 3072, 0.1f, 1);
  for (auto _ : st) {
    std::string q = keel::io::ggml_quantize(t, w.data(), int64_t(w.size()));
    benchmark::DoNotOptimize(q.data());
  }
  keel::bench::set_bytes(st, double(w.size() * sizeof(float)));
}

void dequantize(benchmark::State& st, GgmlType t) {
  const auto w = keel::bench::filled(size_t(768) * 3072, 0.1f, 1);
  const std::string q = keel::io::ggml_quantize(t, w.data(), int64_t(w.size()));
  std::vector<float> y(w.size());
  for (auto _ : st) {
    keel::io::ggml_dequantize(t, q.data(), int64_t(y.size()), y.data());
    benchmark::DoNotOptimize(y.data());
  }
  keel::bench::set_bytes(st, double(y.size() * sizeof(float)));
}

}  // namespace

int main(int argc, char** argv) {
  for (GgmlType t :
       {GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K, GgmlType::Q5_0, GgmlType::Q5_1}) {
    const std::string n = keel::io::ggml_type_name(t);
    benchmark::RegisterBenchmark(("kquant/quantize/" + n).c_str(), quantize, t)
        ->UseRealTime()
        ->MinTime(0.2)
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("kquant/dequantize/" + n).c_str(), dequantize, t)
        ->UseRealTime()
        ->MinTime(0.2)
        ->Unit(benchmark::kMillisecond);
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
}
