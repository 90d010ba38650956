// Quantized matmul through the Backend interface: one token (decode, bound by
// reading the weights: reported as weight bytes per second) and a 64-row
// batch (reported as integer multiply-adds x 2 per second).
#include <exception>
#include <string>

#include "bench_util.h"

namespace {

using keel::DType;

void run(benchmark::State& st, DType qdt, int64_t M, int64_t N, int64_t K) {
  auto& be = keel::bench::cpu();
  auto w = keel::bench::filled(size_t(N * K), 0.1f, 1),
       x = keel::bench::filled(size_t(M * K), 1.f, 2);
  std::vector<char> wq(keel::dtype_bytes(qdt, size_t(N * K)));
  std::vector<float> ws(static_cast<size_t>(N)), y(static_cast<size_t>(M * N));
  try {
    be.quantize(qdt, w.data(), wq.data(), qdt == DType::I8 ? ws.data() : nullptr, N, K);
    be.qmatmul(qdt, x.data(), wq.data(), ws.data(), y.data(), M, N, K);
  } catch (const std::exception& e) {
    return st.SkipWithError(e.what());
  }
  for (auto _ : st) {
    be.qmatmul(qdt, x.data(), wq.data(), ws.data(), y.data(), M, N, K);
    benchmark::DoNotOptimize(y.data());
  }
  if (M == 1)
    keel::bench::set_bytes(st, double(wq.size()));
  else
    keel::bench::set_flops(st, 2.0 * double(M) * double(N) * double(K));
}

}  // namespace

int main(int argc, char** argv) {
  struct S {
    int64_t M, N, K;
  } shapes[] = {{1, 3072, 768}, {1, 768, 3072}, {1, 50304, 768}, {64, 3072, 768}};
  for (DType qdt : {DType::I8, DType::Q8_0, DType::Q4_0})
    for (S s : shapes)
      benchmark::RegisterBenchmark(
          ("qmatmul/" + std::string(keel::dtype_name(qdt)) + "/" + std::to_string(s.M) + "x" +
           std::to_string(s.K) + "x" + std::to_string(s.N))
              .c_str(),
          run, qdt, s.M, s.N, s.K)
          ->UseRealTime()
          ->MinTime(0.2)
          ->Unit(benchmark::kMicrosecond);
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
}
