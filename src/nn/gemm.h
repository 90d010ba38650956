// Strided matrix products for the nn ops: the Backend's matmul called on
// sub-matrices of larger buffers (column ranges of a fused projection), which
// the contiguous-only ops::matmul cannot express. Validates once, then calls.
#pragma once
#include <cstdint>

#include "backend/backend.h"

namespace keel::nn {

// C (M x N, row stride ldc) = op(A) @ op(B) + beta * C; A stored (M x K) or,
// transposed, (K x M) with row stride lda; B likewise (K x N) / (N x K).
// `what` names the call in error messages.
void gemm(backend::Backend& be, const char* what, bool trans_a, bool trans_b, int64_t M, int64_t N,
          int64_t K, const void* A, int64_t lda, DType adt, const void* B, int64_t ldb, DType bdt,
          void* C, int64_t ldc, DType cdt, float beta);

}  // namespace keel::nn
