// GEMM and quantized matmul for the cpu backend: BLAS loaded at run time (so
// its kernel choice can be corrected before it initialises), bf16 through a
// library or a fallback, int8/4-bit through vector kernels.
#pragma once
#include <string>

#include "backend/backend.h"

namespace keel::backend::cpu {

// C = alpha op(A) op(B) + beta C for the dtype combinations of MatmulArgs.
// C is split into blocks fixed by the shape (never by `threads`), each computed
// single-threaded, so the result is bit-identical for any thread count.
// Environment: KEEL_GEMM=auto|openblas|onednn|portable picks the f32 library
// (auto: oneDNN for A^T B, OpenBLAS otherwise); KEEL_BF16_GEMM=auto|onednn|convert
// picks oneDNN's bf16 matmul or widening to f32 (auto: oneDNN on AVX512-BF16).
void gemm(const MatmulArgs& a, const void* A, const void* B, void* C, int threads);
// Which implementation and kernel run, e.g. "openblas 0.3.21 openmp core=SkylakeX".
std::string gemm_describe();
// Loads the BLAS now rather than at the first GEMM, so its warnings (a weak
// kernel for this CPU, say) reach stderr once, before a run prints its first
// step or token. Idempotent.
void gemm_load();

void quantize(DType qdt, const float* w, void* q, float* scale, int64_t N, int64_t K, int threads);
void dequantize(DType qdt, const void* q, const float* scale, float* w, int64_t N, int64_t K,
                int threads);
void qmatmul(DType qdt, const float* x, const void* wq, const float* wscale, float* y, int64_t M,
             int64_t N, int64_t K, int threads);
// Backend::qpack_bytes / qpack / qmatmul_packed: the layout of
// quant_internal.h where the CPU has AVX-512 VNNI, none (0 bytes) elsewhere.
int64_t qpack_bytes(DType qdt, int64_t N, int64_t K);
void qpack(DType qdt, const void* q, const float* scale, void* packed, int64_t N, int64_t K);
void qmatmul_packed(DType qdt, const float* x, const void* packed, float* y, int64_t M, int64_t N,
                    int64_t K, int threads);

}  // namespace keel::backend::cpu
