// The GEMM used when no BLAS library can be loaded (or KEEL_GEMM=portable):
// plain C++ blocked over columns so a row of accumulators stays in L1. Slow
// but correct; every C element sums k = 0..K-1 in order in f32.
#include <algorithm>
#include <vector>

#include "backend/cpu/gemm_internal.h"

namespace keel::backend::cpu::gemm_detail {

void sgemm_portable(const MatmulArgs& a, const float* A, const float* B, float* C) {
  constexpr int64_t kNb = 256;  // columns per block: accumulators + one B row stay in L1
  const int64_t M = a.M, N = a.N, K = a.K;
  thread_local std::vector<float> bp, acc;
  bp.resize(size_t(K * kNb));
  acc.resize(size_t(kNb));
  for (int64_t j0 = 0; j0 < N; j0 += kNb) {
    const int64_t nb = std::min(kNb, N - j0);
    // Pack op(B)[:, j0:j0+nb] densely so the inner loop is unit-stride.
    for (int64_t k = 0; k < K; ++k)
      for (int64_t j = 0; j < nb; ++j)
        bp[size_t(k * nb + j)] = a.trans_b ? B[(j0 + j) * a.ldb + k] : B[k * a.ldb + j0 + j];
    for (int64_t i = 0; i < M; ++i) {
      float* s = acc.data();
      std::fill(s, s + nb, 0.f);
      for (int64_t k = 0; k < K; ++k) {
        const float aik = a.trans_a ? A[k * a.lda + i] : A[i * a.lda + k];
        const float* br = bp.data() + k * nb;
        for (int64_t j = 0; j < nb; ++j) s[j] += aik * br[j];
      }
      float* c = C + i * a.ldc + j0;
      if (a.beta == 0.f)
        for (int64_t j = 0; j < nb; ++j) c[j] = a.alpha * s[j];
      else
        for (int64_t j = 0; j < nb; ++j) c[j] = a.alpha * s[j] + a.beta * c[j];
    }
  }
}

}  // namespace keel::backend::cpu::gemm_detail
