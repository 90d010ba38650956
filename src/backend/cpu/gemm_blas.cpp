// OpenBLAS loaded at run time with dlopen. Loading late lets keel pick the
// kernel set before the library initialises: Debian's OpenBLAS 0.3.21 does not
// recognise recent Xeons and silently runs its SSE3 "Prescott" kernels (about
// 6x slower), so on AVX-512 CPUs OPENBLAS_CORETYPE is set first.
#include <dlfcn.h>

#include <algorithm>
#include <cctype>
#include <climits>
#include <cstdlib>
#include <mutex>
#include <string>

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

// OpenBLAS core names that use at least AVX2 + FMA kernels.
bool core_is_modern(const std::string& core) {
  static const char* strong[] = {"haswell",        "zen",      "skylakex", "cooperlake",
                                 "sapphirerapids", "excavator"};
  std::string c = lower(core);
  for (const char* s : strong)
    if (c == s) return true;
  return false;
}

bool core_has_avx512(const std::string& core) {
  std::string c = lower(core);
  return c == "skylakex" || c == "cooperlake" || c == "sapphirerapids";
}

OpenBlas load_openblas() {
  OpenBlas ob;
  const CpuFeatures& f = cpu_features();
  bool avx512 = f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq;
  // Must happen before the library's constructor runs, i.e. before dlopen.
  if (avx512 && std::getenv("OPENBLAS_CORETYPE") == nullptr)
    setenv("OPENBLAS_CORETYPE", f.avx512_bf16 ? "Cooperlake" : "SkylakeX", 0);

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
    ob.sgemm = sgemm;
    ob.path = c.path;
    ob.build = c.build;
    ob.corename = corename ? corename() : "unknown";
    ob.config = config ? config() : "";
    // keel partitions the work itself (fixed blocks, so results do not depend
    // on the thread count); the library always runs one thread per block.
    if (set_threads) set_threads(1);
    bool weak = (f.avx2 && f.fma && !core_is_modern(ob.corename)) ||
                (avx512 && !core_has_avx512(ob.corename));
    if (weak) {
      ob.warning = fmt::format(
          "OpenBLAS uses its '{}' kernels on a CPU with {} ({}); GEMM will be several times "
          "slower than it could be. Set OPENBLAS_CORETYPE (e.g. {}) to override.",
          ob.corename, f.level(), f.brand, avx512 ? "SkylakeX" : "Haswell");
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
