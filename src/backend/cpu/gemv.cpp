// GEMV driver and scalar lanes: W's rows are cut into blocks fixed by the
// shape and handed to whichever thread of the team (gemv_team.h) is free (a
// thread the OS preempts does not hold the others up); each output element
// is computed by one thread in one fixed order, so the result never depends
// on which.
#include "backend/cpu/gemv.h"

#include <algorithm>
#include <cstdlib>
#include <string>

#include "backend/cpu/gemm_internal.h"
#include "backend/cpu/gemv_impl.h"
#include "backend/cpu/gemv_team.h"

namespace keel::backend::cpu {

namespace gemv_detail {
namespace {
struct ScalarLanes {
  struct Acc {
    float v[16];
  };
  static Acc zero() { return Acc{}; }
  static Acc load(const float* p) {
    Acc a;
    for (int j = 0; j < 16; ++j) a.v[j] = p[j];
    return a;
  }
  static Acc fma(Acc a, Acc b, Acc c) {
    for (int j = 0; j < 16; ++j) c.v[j] = std::fma(a.v[j], b.v[j], c.v[j]);
    return c;
  }
  static float reduce(Acc a) { return tree16(a.v); }
  static float fma1(float a, float b, float c) { return std::fma(a, b, c); }
};
}  // namespace

GemvFn gemv_scalar() {
  return &gemv_rows<ScalarLanes>;
}
}  // namespace gemv_detail

bool gemv_applies(const MatmulArgs& a) {
  // KEEL_GEMM names a library explicitly (tests force each one): only "auto" uses GEMV.
  const char* mode = std::getenv("KEEL_GEMM");
  if (mode && *mode && std::string(mode) != "auto") return false;
  return a.a_dtype == DType::F32 && a.b_dtype == DType::F32 && a.c_dtype == DType::F32 &&
         !a.trans_a && a.trans_b && a.batch == 1 && a.M >= 1 && a.M <= kGemvMaxRows && a.K > 0;
}

void gemv_f32(const MatmulArgs& a, const float* A, const float* B, float* C, int threads) {
  using namespace gemv_detail;
  const GemvFn fn = gemm_detail::allow_avx512() ? gemv_avx512()
                    : gemm_detail::allow_avx2() ? gemv_avx2()
                                                : gemv_scalar();
  // Blocks of 64 W rows: small enough to balance two to many threads, large
  // enough that the scheduling costs nothing next to streaming 64 rows.
  const int64_t block = 64, nblocks = (a.N + block - 1) / block;
  const int nt = int(std::max<int64_t>(1, std::min<int64_t>(threads, nblocks)));
  team_for(nt, nblocks, [&](int64_t b) {
    fn(A, a.lda, a.M, B, a.ldb, a.K, C, a.ldc, b * block, std::min(a.N, (b + 1) * block), a.alpha,
       a.beta);
  });
}

}  // namespace keel::backend::cpu
