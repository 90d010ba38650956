// OpenBLAS loaded at run time with dlopen. Loading late lets keel pick the
// kernel set before the library initialises: Debian's OpenBLAS 0.3.21 does not
// recognise recent Xeons and silently runs its SSE3 "Prescott" kernels (about
// 6x slower), and environments set OPENBLAS_CORETYPE to older cores than the
// CPU has (Haswell on AVX-512 parts: ~1.7x slower). keel sets the strongest
// core the CPU runs, then checks the kernels against float64 before use.
#include <dlfcn.h>

#include <algorithm>
#include <cctype>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "backend/cpu/gemm_internal.h"
#include "core/cpu_features.h"
#include "core/error.h"
#include "core/log.h"

namespace keel::backend::cpu::gemm_detail {

namespace {

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

// OpenBLAS core names by strength: 0 below AVX2 (SSE kernels), 1 AVX2 + FMA,
// 2 AVX-512, 3 AVX-512 with bf16. -1 for a name keel does not know.
int core_rank(const std::string& core) {
  static const std::pair<const char*, int> ranks[] = {
      {"prescott", 0},   {"core2", 0},       {"penryn", 0},     {"dunnington", 0},
      {"nehalem", 0},    {"sandybridge", 0}, {"barcelona", 0},  {"bulldozer", 0},
      {"piledriver", 0}, {"steamroller", 0}, {"excavator", 1},  {"haswell", 1},
      {"zen", 1},        {"skylakex", 2},    {"cooperlake", 3}, {"sapphirerapids", 3}};
  const std::string c = lower(core);
  for (const auto& [n, r] : ranks)
    if (c == n) return r;
  return -1;
}

// The strongest core this CPU runs, and its rank ("" below AVX2).
std::pair<std::string, int> best_core(const CpuFeatures& f) {
  const bool avx512 = f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq;
  if (avx512) return f.avx512_bf16 ? std::pair{"Cooperlake", 3} : std::pair{"SkylakeX", 2};
  if (f.avx2 && f.fma) return {"Haswell", 1};
  return {"", 0};
}

// Picks OPENBLAS_CORETYPE before the library initialises. KEEL_BLAS_CORETYPE
// decides: "auto" (default) takes the strongest core the CPU supports when the
// environment names a weaker one or none (environments set weak cores to work
// around old OpenBLAS bugs; the self-check below guards against those bugs);
// "env" keeps OPENBLAS_CORETYPE (or the library's own detection) as is; any
// other value is the core to use. Returns why, for describe() and the logs.
std::string choose_core() {
  const CpuFeatures& f = cpu_features();
  const char* k = std::getenv("KEEL_BLAS_CORETYPE");
  const std::string mode = (k && *k) ? std::string(k) : "auto";
  const char* e = std::getenv("OPENBLAS_CORETYPE");
  const std::string env = (e && *e) ? std::string(e) : "";
  if (lower(mode) == "env")
    return env.empty() ? "the library's own detection (KEEL_BLAS_CORETYPE=env)"
                       : "OPENBLAS_CORETYPE=" + env + " kept (KEEL_BLAS_CORETYPE=env)";
  if (lower(mode) != "auto") {
    if (core_rank(mode) < 0)
      fail(
          "KEEL_BLAS_CORETYPE='{}' is not auto, env or an OpenBLAS core name (Haswell, Zen, "
          "SkylakeX, Cooperlake, ...)",
          mode);
    setenv("OPENBLAS_CORETYPE", mode.c_str(), 1);
    return "KEEL_BLAS_CORETYPE=" + mode;
  }
  const auto [best, rank] = best_core(f);
  if (best.empty()) return env.empty() ? "the library's own detection" : "OPENBLAS_CORETYPE=" + env;
  if (!env.empty() && core_rank(env) >= rank) return "OPENBLAS_CORETYPE=" + env;
  setenv("OPENBLAS_CORETYPE", best.c_str(), 1);
  if (env.empty()) return best + ", the strongest this CPU runs";
  return best + " instead of OPENBLAS_CORETYPE=" + env + " (weaker than this CPU's " + f.level() +
         ", KEEL_BLAS_CORETYPE=env keeps it)";
}

// A quick check of the loaded kernels against a float64 product, all four
// transpose cases at odd sizes: a core that computes wrong numbers on this
// CPU is not used. Returns the largest error relative to sum |a||b|.
double self_check(OpenBlas::Sgemm sgemm) {
  constexpr int M = 37, N = 29, K = 67;
  std::vector<float> A(M * K), B(K * N), C(M * N);
  for (int i = 0; i < M * K; ++i) A[size_t(i)] = float((i * 7919) % 211) / 105.f - 1.f;
  for (int i = 0; i < K * N; ++i) B[size_t(i)] = float((i * 104729) % 197) / 98.f - 1.f;
  double worst = 0;
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb) {
      // The same logical matrices stored transposed when ta / tb say so.
      std::vector<float> As(A.size()), Bs(B.size());
      for (int i = 0; i < M; ++i)
        for (int k = 0; k < K; ++k) As[size_t(ta ? k * M + i : i * K + k)] = A[size_t(i * K + k)];
      for (int k = 0; k < K; ++k)
        for (int j = 0; j < N; ++j) Bs[size_t(tb ? j * K + k : k * N + j)] = B[size_t(k * N + j)];
      sgemm(101, ta ? 112 : 111, tb ? 112 : 111, M, N, K, 1.f, As.data(), ta ? M : K, Bs.data(),
            tb ? K : N, 0.f, C.data(), N);
      for (int i = 0; i < M; ++i)
        for (int j = 0; j < N; ++j) {
          double ref = 0, mag = 0;
          for (int k = 0; k < K; ++k) {
            ref += double(A[size_t(i * K + k)]) * double(B[size_t(k * N + j)]);
            mag += std::fabs(double(A[size_t(i * K + k)]) * double(B[size_t(k * N + j)]));
          }
          worst = std::max(worst, std::fabs(double(C[size_t(i * N + j)]) - ref) / (mag + 1e-30));
        }
    }
  return worst;
}

OpenBlas load_openblas() {
  OpenBlas ob;
  const CpuFeatures& f = cpu_features();
  // Must happen before the library's constructor runs, i.e. before dlopen.
  ob.core_reason = choose_core();

  // The OpenMP build first: it shares libgomp's thread pool with keel's own
  // kernels instead of keeping a second set of spinning threads.
  static const struct {
    const char* path;
    const char* build;
  } candidates[] = {
      {"/usr/lib/x86_64-linux-gnu/openblas-openmp/libopenblas.so.0", "openmp"},
      {"/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0", "pthread"},
      {"libopenblas.so.0", "default"},
  };
  for (const auto& c : candidates) {
    void* h = dlopen(c.path, RTLD_NOW | RTLD_LOCAL);
    if (h == nullptr) continue;
    auto sgemm = reinterpret_cast<OpenBlas::Sgemm>(dlsym(h, "cblas_sgemm"));
    auto corename = reinterpret_cast<char* (*)()>(dlsym(h, "openblas_get_corename"));
    auto config = reinterpret_cast<char* (*)()>(dlsym(h, "openblas_get_config"));
    auto set_threads = reinterpret_cast<void (*)(int)>(dlsym(h, "openblas_set_num_threads"));
    if (sgemm == nullptr) {
      log().warn("gemm: {} has no cblas_sgemm; trying the next BLAS", c.path);
      dlclose(h);
      continue;
    }
    ob.path = c.path;
    ob.build = c.build;
    ob.corename = corename ? corename() : "unknown";
    ob.config = config ? config() : "";
    // keel partitions the work itself (fixed blocks, so results do not depend
    // on the thread count); the library always runs one thread per block.
    if (set_threads) set_threads(1);
    // f32 with K = 67: a correct kernel stays near 2^-24 * sqrt(K); 1e-5 is
    // two orders above that and far below a wrong kernel's error.
    ob.self_check_error = self_check(sgemm);
    if (!(ob.self_check_error < 1e-5)) {
      ob.warning = fmt::format(
          "OpenBLAS's '{}' kernels failed keel's start-up check on this CPU (relative error "
          "{:.2e} against float64); GEMM falls back to {}. Set KEEL_BLAS_CORETYPE to another "
          "core to retry.",
          ob.corename, ob.self_check_error, onednn_available() ? "oneDNN" : "portable C++");
      log().warn("gemm: {}", ob.warning);
      return ob;  // sgemm stays null: no wrong numbers reach a model
    }
    ob.sgemm = sgemm;
    const int have = core_rank(ob.corename), best = best_core(f).second;
    if (have >= 0 && have < best) {
      ob.warning = fmt::format(
          "OpenBLAS uses its '{}' kernels on a CPU with {} ({}): GEMM runs several times slower "
          "than it could ({}). Unset KEEL_BLAS_CORETYPE to let keel pick the strongest.",
          ob.corename, f.level(), f.brand, ob.core_reason);
      log().warn("gemm: {}", ob.warning);
    }
    return ob;
  }
  log().warn("gemm: no OpenBLAS could be loaded; using the portable C++ GEMM (slow)");
  return ob;
}

}  // namespace

const OpenBlas& openblas() {
  static const OpenBlas ob = load_openblas();
  return ob;
}

void sgemm_openblas(const MatmulArgs& a, const float* A, const float* B, float* C) {
  constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;
  KEEL_ASSERT(a.M <= INT_MAX && a.N <= INT_MAX && a.K <= INT_MAX && a.lda <= INT_MAX &&
              a.ldb <= INT_MAX && a.ldc <= INT_MAX);
  openblas().sgemm(kRowMajor, a.trans_a ? kTrans : kNoTrans, a.trans_b ? kTrans : kNoTrans,
                   int(a.M), int(a.N), int(a.K), a.alpha, A, int(a.lda), B, int(a.ldb), a.beta, C,
                   int(a.ldc));
}

namespace {
// KEEL_CPU_LEVEL caps the vector level so every path can be tested on one machine.
int level_cap() {
  const char* s = std::getenv("KEEL_CPU_LEVEL");
  if (s == nullptr || *s == 0) return 2;
  std::string v = lower(s);
  if (v == "scalar") return 0;
  if (v == "avx2") return 1;
  if (v.rfind("avx512", 0) == 0) return 2;
  fail("KEEL_CPU_LEVEL='{}' is not one of scalar, avx2, avx512", s);
}
}  // namespace

bool allow_avx2() {
  static const bool ok = cpu_features().avx2 && cpu_features().fma && level_cap() >= 1;
  return ok;
}

bool allow_avx512() {
  const CpuFeatures& f = cpu_features();
  static const bool ok = f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.avx512_vnni &&
                         allow_avx2() && level_cap() >= 2;
  return ok;
}

}  // namespace keel::backend::cpu::gemm_detail
