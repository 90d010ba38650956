// f32 and bf16 GEMM through the Backend interface at GPT-2 small shapes
// (B*T = 256 rows): forward (A B^T with weights stored out x in), input
// gradient (dY W) and weight gradient (dY^T X), once per engine so the
// OpenBLAS / oneDNN choice in gemm.cpp can be checked against measurements.
// KEEL_BENCH_ENGINES / KEEL_BENCH_BF16_ENGINES pick one f32 / bf16 engine.
// --rows=N puts N tokens in place of the 256 (1024 and 2048 are bench-train's
// long lines); --cold evicts the caches before every timed call.
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "bench_util.h"

namespace {

using keel::DType;
using keel::backend::MatmulArgs;

// --cold: every timed call starts with A, B and C out of cache, as in a
// training step, where the other layers' work passes between two GEMMs.
bool g_cold = false;

void evict_caches() {
  static std::vector<float> junk(size_t(64) << 20 >> 2);
  for (size_t i = 0; i < junk.size(); i += 16) junk[i] += 1.f;
  benchmark::DoNotOptimize(junk.data());
}

struct Shape {
  int64_t M, K, N;
  bool ta, tb;
};

// M x K x N with op flags; the names say which training step they come from.
const Shape kShapes[] = {
    {256, 768, 3072, false, false},   // fc up, weights stored in x out
    {256, 3072, 768, false, false},   // fc down
    {256, 768, 768, false, false},    // attention projection
    {256, 768, 50304, false, true},   // logits against the tied embedding (V x C)
    {256, 768, 3072, false, true},    // fc up, weights stored out x in
    {256, 3072, 768, false, true},    // fc down, out x in
    {256, 768, 2304, false, true},    // qkv
    {256, 50304, 768, false, false},  // d(hidden) from d(logits) @ wte
    {256, 50257, 768, false, false},  // the same at GPT-2's own (odd) vocabulary
    {3072, 256, 768, true, false},    // dW = dY^T X shapes
    {768, 256, 3072, true, false},   {768, 256, 768, true, false}, {50304, 256, 768, true, false},
};

MatmulArgs args(const Shape& s, DType dt, DType cdt) {
  MatmulArgs a;
  a.trans_a = s.ta;
  a.trans_b = s.tb;
  a.M = s.M;
  a.N = s.N;
  a.K = s.K;
  a.lda = s.ta ? s.M : s.K;
  a.ldb = s.tb ? s.K : s.N;
  a.ldc = s.N;
  a.a_dtype = a.b_dtype = dt;
  a.c_dtype = cdt;
  return a;
}

std::string shape_name(const Shape& s) {
  return std::to_string(s.M) + "x" + std::to_string(s.K) + "x" + std::to_string(s.N) + "/" +
         (s.ta ? "T" : "N") + (s.tb ? "T" : "N");
}

void run_f32(benchmark::State& st, Shape s, std::string engine) {
  setenv("KEEL_GEMM", engine.c_str(), 1);
  auto& be = keel::bench::cpu();
  MatmulArgs a = args(s, DType::F32, DType::F32);
  auto A = keel::bench::filled(size_t(s.M * s.K), 1.f, 1);
  auto B = keel::bench::filled(size_t(s.K * s.N), 1.f, 2);
  std::vector<float> C(static_cast<size_t>(s.M * s.N));
  try {
    be.matmul(a, A.data(), B.data(), C.data());  // warm: library init, page faults
  } catch (const std::exception& e) {
    st.SkipWithError(e.what());
    unsetenv("KEEL_GEMM");
    return;
  }
  for (auto _ : st) {
    if (g_cold) {
      st.PauseTiming();
      evict_caches();
      st.ResumeTiming();
    }
    be.matmul(a, A.data(), B.data(), C.data());
    benchmark::DoNotOptimize(C.data());
  }
  keel::bench::set_flops(st, 2.0 * double(s.M) * double(s.N) * double(s.K));
  unsetenv("KEEL_GEMM");
}

void run_bf16(benchmark::State& st, Shape s, DType cdt, std::string engine) {
  setenv("KEEL_BF16_GEMM", engine.c_str(), 1);
  auto& be = keel::bench::cpu();
  MatmulArgs a = args(s, DType::BF16, cdt);
  auto A = keel::bench::filled_bf16(size_t(s.M * s.K), 1.f, 1);
  auto B = keel::bench::filled_bf16(size_t(s.K * s.N), 1.f, 2);
  std::vector<float> C(static_cast<size_t>(s.M * s.N));  // big enough for either output dtype
  try {
    be.matmul(a, A.data(), B.data(), C.data());
  } catch (const std::exception& e) {
    st.SkipWithError(e.what());
    unsetenv("KEEL_BF16_GEMM");
    return;
  }
  for (auto _ : st) {
    if (g_cold) {
      st.PauseTiming();
      evict_caches();
      st.ResumeTiming();
    }
    be.matmul(a, A.data(), B.data(), C.data());
    benchmark::DoNotOptimize(C.data());
  }
  keel::bench::set_flops(st, 2.0 * double(s.M) * double(s.N) * double(s.K));
  unsetenv("KEEL_BF16_GEMM");
}

// The shape with the token count (256 in kShapes) replaced by rows.
Shape with_rows(Shape s, int64_t rows) {
  if (s.M == 256) s.M = rows;
  if (s.K == 256) s.K = rows;
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> engines{"auto", "openblas", "onednn"};
  if (const char* e = std::getenv("KEEL_BENCH_ENGINES")) engines = {e};
  std::vector<std::string> bf16_engines{"tile", "onednn"};
  if (const char* e = std::getenv("KEEL_BENCH_BF16_ENGINES")) bf16_engines = {e};
  int64_t rows = 256;
  int kept = 1;
  for (int i = 1; i < argc; ++i) {
    if (!std::strncmp(argv[i], "--rows=", 7))
      rows = std::atoll(argv[i] + 7);
    else if (!std::strcmp(argv[i], "--cold"))
      g_cold = true;
    else
      argv[kept++] = argv[i];
  }
  argc = kept;
  if (rows <= 0) {
    std::fprintf(stderr, "bench_gemm: --rows must be a positive token count\n");
    return 2;
  }
  for (const Shape& s0 : kShapes) {
    const Shape s = with_rows(s0, rows);
    for (const auto& e : engines)
      benchmark::RegisterBenchmark(("sgemm/" + e + "/" + shape_name(s)).c_str(), run_f32, s, e)
          ->UseRealTime()
          ->MinTime(0.2)
          ->Unit(benchmark::kMillisecond);
    for (const auto& e : bf16_engines)
      for (DType cdt : {DType::F32, DType::BF16})
        benchmark::RegisterBenchmark(
            ("bf16gemm/" + e + (cdt == DType::F32 ? "/f32out/" : "/bf16out/") + shape_name(s))
                .c_str(),
            run_bf16, s, cdt, e)
            ->UseRealTime()
            ->MinTime(0.2)
            ->Unit(benchmark::kMillisecond);
  }
  benchmark::Initialize(&argc, argv);
  std::fprintf(stderr, "%s\n", keel::bench::cpu().describe().c_str());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
}
