// Validation and dispatch of strided matrix products (see gemm.h).
#include "nn/gemm.h"

#include "core/error.h"

namespace keel::nn {

void gemm(backend::Backend& be, const char* what, bool trans_a, bool trans_b, int64_t M, int64_t N,
          int64_t K, const void* A, int64_t lda, DType adt, const void* B, int64_t ldb, DType bdt,
          void* C, int64_t ldc, DType cdt, float beta) {
  const bool ok_types =
      (adt == DType::F32 && bdt == DType::F32 && cdt == DType::F32) ||
      (adt == DType::BF16 && bdt == DType::BF16 && (cdt == DType::F32 || cdt == DType::BF16));
  if (!ok_types)
    fail<KernelError>(
        "[matmul {}] dtypes ({}, {}, {}) are not (f32, f32, f32), (bf16, bf16, f32) "
        "or (bf16, bf16, bf16)",
        what, dtype_name(adt), dtype_name(bdt), dtype_name(cdt));
  if (!be.supports(backend::Kernel::Matmul, adt))
    fail<KernelError>("[matmul {}] backend {} does not support {}", what, be.name(),
                      dtype_name(adt));
  const int64_t a_cols = trans_a ? M : K, b_cols = trans_b ? K : N;
  if (M < 0 || N < 0 || K < 0 || lda < a_cols || ldb < b_cols || ldc < N)
    fail<KernelError>(
        "[matmul {}] M={} N={} K={} with row strides lda={} ldb={} ldc={} "
        "(trans_a={}, trans_b={}) do not fit",
        what, M, N, K, lda, ldb, ldc, trans_a, trans_b);
  if (M == 0 || N == 0) return;
  backend::MatmulArgs m;
  m.trans_a = trans_a;
  m.trans_b = trans_b;
  m.M = M;
  m.N = N;
  m.K = K;
  m.lda = lda;
  m.ldb = ldb;
  m.ldc = ldc;
  m.beta = beta;
  m.a_dtype = adt;
  m.b_dtype = bdt;
  m.c_dtype = cdt;
  be.matmul(m, A, B, C);
}

}  // namespace keel::nn
