// This machine's roofline, measured in the same run as the kernels: the best
// SGEMM rate of the BLAS libraries on large square matrices (each with its own
// threading, and through keel's driver), and STREAM-style copy / triad
// bandwidth over arrays far larger than the caches.
#include <dlfcn.h>
#include <omp.h>

#include <cstdlib>
#include <exception>
#include <string>

#include "bench_util.h"

#if __has_include(<oneapi/dnnl/dnnl.h>)
#include <oneapi/dnnl/dnnl.h>
#define KEEL_BENCH_DNNL 1
#endif

namespace {

int bench_threads() {
  const char* t = std::getenv("KEEL_BENCH_THREADS");
  return t ? std::atoi(t) : 2;
}

using Sgemm = void (*)(int, int, int, int, int, int, float, const float*, int, const float*, int,
                       float, float*, int);

// OpenBLAS as the cpu backend loads it (same path preference), run with its
// own threads. Loading through keel first makes OPENBLAS_CORETYPE right.
struct NativeBlas {
  Sgemm sgemm = nullptr;
  void (*set_threads)(int) = nullptr;
};
NativeBlas& native_blas() {
  static NativeBlas nb = [] {
    NativeBlas b;
    keel::bench::cpu().describe();  // loads OpenBLAS (and sets OPENBLAS_CORETYPE) first
    for (const char* p :
         {"/usr/lib/x86_64-linux-gnu/openblas-openmp/libopenblas.so.0",
          "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0", "libopenblas.so.0"}) {
      void* h = dlopen(p, RTLD_NOW | RTLD_LOCAL);
      if (!h) continue;
      b.sgemm = reinterpret_cast<Sgemm>(dlsym(h, "cblas_sgemm"));
      b.set_threads = reinterpret_cast<void (*)(int)>(dlsym(h, "openblas_set_num_threads"));
      if (b.sgemm) break;
    }
    return b;
  }();
  return nb;
}

void peak(benchmark::State& st, std::string lib, int64_t n) {
  auto A = keel::bench::filled(size_t(n * n), 1.f, 1),
       B = keel::bench::filled(size_t(n * n), 1.f, 2);
  std::vector<float> C(static_cast<size_t>(n * n));
  const int th = bench_threads();
  auto once = [&] {
    if (lib == "openblas") {
      NativeBlas& b = native_blas();
      b.sgemm(101, 111, 111, int(n), int(n), int(n), 1.f, A.data(), int(n), B.data(), int(n), 0.f,
              C.data(), int(n));
#ifdef KEEL_BENCH_DNNL
    } else if (lib == "onednn") {
      dnnl_sgemm('N', 'N', n, n, n, 1.f, A.data(), n, B.data(), n, 0.f, C.data(), n);
#endif
    } else {  // keel's driver (fixed blocks, one library thread per block)
      keel::backend::MatmulArgs a;
      a.M = a.N = a.K = a.lda = a.ldb = a.ldc = n;
      keel::bench::cpu().matmul(a, A.data(), B.data(), C.data());
    }
  };
  if (lib == "openblas") {
    if (!native_blas().sgemm) return st.SkipWithError("no OpenBLAS");
    native_blas().set_threads(th);
  }
#ifndef KEEL_BENCH_DNNL
  if (lib == "onednn") return st.SkipWithError("no oneDNN headers");
#endif
  omp_set_num_threads(th);
  once();
  for (auto _ : st) {
    once();
    benchmark::DoNotOptimize(C.data());
  }
  if (lib == "openblas") native_blas().set_threads(1);  // as keel runs it
  keel::bench::set_flops(st, 2.0 * double(n) * double(n) * double(n));
}

// STREAM conventions: copy moves 2 x 4 bytes per element, triad 3 x 4.
void stream(benchmark::State& st, std::string kind) {
  const int64_t n = int64_t(1) << 25;  // 128 MiB per array
  const int th = bench_threads();
  std::vector<float> a(static_cast<size_t>(n)), b(static_cast<size_t>(n), 1.f),
      c(static_cast<size_t>(n), 2.f);
  float* pa = a.data();
  const float *pb = b.data(), *pc = c.data();
  const bool triad = kind == "triad";
  auto once = [&] {
#pragma omp parallel for num_threads(th) schedule(static)
    for (int64_t i = 0; i < n; ++i) pa[i] = triad ? pb[i] + 3.f * pc[i] : pb[i];
  };
  once();
  for (auto _ : st) {
    once();
    benchmark::ClobberMemory();
  }
  keel::bench::set_bytes(st, double(n) * (triad ? 12.0 : 8.0));
}

}  // namespace

int main(int argc, char** argv) {
  for (const char* lib : {"openblas", "onednn", "keel"})
    for (int64_t n : {2048, 4096})
      benchmark::RegisterBenchmark(
          (std::string("roofline/sgemm/") + lib + "/" + std::to_string(n)).c_str(), peak,
          std::string(lib), n)
          ->UseRealTime()
          ->Iterations(n >= 4096 ? 1 : 4)
          ->Repetitions(3)
          ->Unit(benchmark::kMillisecond);
  for (const char* k : {"copy", "triad"})
    benchmark::RegisterBenchmark((std::string("roofline/stream/") + k).c_str(), stream,
                                 std::string(k))
        ->UseRealTime()
        ->Iterations(5)
        ->Repetitions(3)
        ->Unit(benchmark::kMillisecond);
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
}
