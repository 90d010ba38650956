// Reference GEMM: the textbook triple loop with an f64 dot product per output.
#include "backend/ref/ref_kernels.h"

namespace keel::backend::ref {

namespace {

template <class TA, class TC>
void matmul_typed(const MatmulArgs& a, const void* A, const void* B, void* C) {
  for (int64_t b = 0; b < a.batch; ++b) {
    const TA* Ab = static_cast<const TA*>(A) + b * a.stride_a;  // (M, K) or (K, M)
    const TA* Bb = static_cast<const TA*>(B) + b * a.stride_b;  // (K, N) or (N, K)
    TC* Cb = static_cast<TC*>(C) + b * a.stride_c;              // (M, N)
    for (int64_t i = 0; i < a.M; ++i) {
      for (int64_t j = 0; j < a.N; ++j) {
        double acc = 0;
        for (int64_t k = 0; k < a.K; ++k) {
          const int64_t ia = a.trans_a ? k * a.lda + i : i * a.lda + k;
          const int64_t ib = a.trans_b ? j * a.ldb + k : k * a.ldb + j;
          acc += ld<TA>(Ab, ia) * ld<TA>(Bb, ib);
        }
        double out = double(a.alpha) * acc;
        // beta == 0 means C is not read (it may hold garbage or NaN), as in BLAS.
        if (a.beta != 0.f) out += double(a.beta) * ld<TC>(Cb, i * a.ldc + j);
        st<TC>(Cb, i * a.ldc + j, out);
      }
    }
  }
}

}  // namespace

void matmul(const MatmulArgs& a, const void* A, const void* B, void* C) {
  if (a.a_dtype == DType::F32 && a.b_dtype == DType::F32 && a.c_dtype == DType::F32)
    return matmul_typed<float, float>(a, A, B, C);
  if (a.a_dtype == DType::BF16 && a.b_dtype == DType::BF16 && a.c_dtype == DType::F32)
    return matmul_typed<bf16_t, float>(a, A, B, C);
  if (a.a_dtype == DType::BF16 && a.b_dtype == DType::BF16 && a.c_dtype == DType::BF16)
    return matmul_typed<bf16_t, bf16_t>(a, A, B, C);
  fail<KernelError>("[matmul] ref backend: unsupported dtypes ({}, {}, {})", dtype_name(a.a_dtype),
                    dtype_name(a.b_dtype), dtype_name(a.c_dtype));
}

}  // namespace keel::backend::ref
