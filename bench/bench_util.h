// Shared helpers for the benchmark programs: the backend under test, filled
// buffers, and counters named so scripts/bench.sh can turn each result into
// one JSON line (flop_per_s for compute-bound kernels, byte_per_s otherwise).
#pragma once
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "core/dtype.h"

namespace keel::bench {

// The cpu backend with 2 threads unless KEEL_BENCH_THREADS says otherwise.
inline backend::Backend& cpu() {
  static std::unique_ptr<backend::Backend> be = [] {
    auto b = backend::make_backend("cpu");
    const char* t = std::getenv("KEEL_BENCH_THREADS");
    b->set_threads(t ? std::atoi(t) : 2);
    return b;
  }();
  return *be;
}

inline std::vector<float> filled(size_t n, float scale = 1.f, uint32_t seed = 1) {
  std::vector<float> v(n);
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> d(-scale, scale);
  for (auto& x : v) x = d(g);
  return v;
}

inline std::vector<uint16_t> filled_bf16(size_t n, float scale = 1.f, uint32_t seed = 1) {
  std::vector<float> f = filled(n, scale, seed);
  std::vector<uint16_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = f32_to_bf16(f[i]);
  return v;
}

inline void set_flops(benchmark::State& s, double flops_per_iter) {
  s.counters["flop_per_s"] =
      benchmark::Counter(flops_per_iter, benchmark::Counter::kIsIterationInvariantRate);
}
inline void set_bytes(benchmark::State& s, double bytes_per_iter) {
  s.counters["byte_per_s"] =
      benchmark::Counter(bytes_per_iter, benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace keel::bench
