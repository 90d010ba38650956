// The cpu backend's non-GEMM kernels as one table of function pointers per
// vector level (scalar, avx2, avx512). Each table is filled in its own
// translation unit compiled for that ISA; CpuBackend picks one at run time.
// Signatures mirror backend::Backend plus the thread count to use.
#pragma once
#include <cstdint>
#include <string_view>

#include "backend/backend.h"

namespace keel::backend::cpu {

enum class Level : uint8_t { Scalar, Avx2, Avx512 };
std::string_view level_name(Level l);
// Best level this CPU runs, capped by the KEEL_CPU_LEVEL environment variable
// (scalar|avx2|avx512; anything else throws keel::Error naming the value).
Level detect_level();
// Parses "scalar", "avx2", "avx512" (also "avx512-bf16", treated as avx512).
Level parse_level(std::string_view s);
// Whether this CPU can run level l.
bool level_available(Level l);

struct KernelTable {
  void (*embedding_forward)(DType dt, const int32_t* ids, const void* table, void* out, int64_t n,
                            int64_t C, int threads);
  void (*embedding_backward)(DType dt, const int32_t* ids, const void* dout, float* dtable,
                             int64_t n, int64_t C, int threads);

  void (*layernorm_forward)(DType dt, const void* x, const void* w, const void* b, void* y,
                            float* mean, float* rstd, int64_t N, int64_t C, float eps, int threads);
  void (*layernorm_backward)(DType dt, const void* dy, const void* x, const void* w,
                             const float* mean, const float* rstd, void* dx, float* dw, float* db,
                             int64_t N, int64_t C, int threads);
  void (*rmsnorm_forward)(DType dt, const void* x, const void* w, void* y, float* rstd, int64_t N,
                          int64_t C, float eps, int threads);
  void (*rmsnorm_backward)(DType dt, const void* dy, const void* x, const void* w,
                           const float* rstd, void* dx, float* dw, int64_t N, int64_t C,
                           int threads);

  void (*rope_forward)(const RopeArgs& a, const void* x, void* y, int threads);
  void (*rope_backward)(const RopeArgs& a, const void* dy, void* dx, int threads);

  void (*attention_forward)(const AttentionArgs& a, const void* q, const void* k, const void* v,
                            void* o, float* lse, int threads);
  void (*attention_backward)(const AttentionArgs& a, const void* dout, const void* q, const void* k,
                             const void* v, const void* o, const float* lse, void* dq, void* dk,
                             void* dv, int threads);

  void (*gelu_forward)(DType dt, const void* x, void* y, int64_t n, int threads);
  void (*gelu_backward)(DType dt, const void* x, const void* dy, void* dx, int64_t n, int threads);
  void (*silu_forward)(DType dt, const void* x, void* y, int64_t n, int threads);
  void (*silu_backward)(DType dt, const void* x, const void* dy, void* dx, int64_t n, int threads);
  void (*swiglu_forward)(DType dt, const void* gate, const void* up, void* y, int64_t n,
                         int threads);
  void (*swiglu_backward)(DType dt, const void* gate, const void* up, const void* dy, void* dgate,
                          void* dup, int64_t n, int threads);

  void (*add)(DType dt, const void* a, const void* b, void* y, int64_t n, int threads);
  void (*accumulate)(DType dt, const void* x, void* y, int64_t n, float alpha, int threads);
  void (*bias_add)(DType dt, void* y, const void* bias, int64_t N, int64_t C, int threads);
  void (*bias_backward)(DType dt, const void* dy, float* dbias, int64_t N, int64_t C, int threads);

  void (*cross_entropy_forward)(DType dt, const void* logits, const int32_t* targets, float* losses,
                                float* lse, int64_t N, int64_t V, int threads);
  void (*cross_entropy_backward)(DType dt, const void* logits, const int32_t* targets,
                                 const float* lse, const float* dloss, void* dlogits, int64_t N,
                                 int64_t V, int threads);

  void (*adamw_update)(const AdamWArgs& a, float* param, const float* grad, float* m, float* v,
                       uint16_t* param_bf16, int threads);

  void (*reduce_forward)(ReduceOp op, DType dt, const void* x, float* y, int64_t N, int64_t C,
                         int threads);
  void (*reduce_backward)(ReduceOp op, DType dt, const void* x, const float* dy, void* dx,
                          int64_t N, int64_t C, int threads);
  double (*sum_squares)(DType dt, const void* x, int64_t n, int threads);

  void (*cast)(DType src_dt, const void* src, DType dst_dt, void* dst, int64_t n, int threads);
};

// One table per level; kernels_avx2/avx512 exist in every build but must only
// be called when level_available() says so.
const KernelTable& kernels_scalar();
const KernelTable& kernels_avx2();
const KernelTable& kernels_avx512();
const KernelTable& kernels_for(Level l);

// For tests, on CPUs with AVX512-BF16 only: runs `trials` random 4 x 4 blocks
// of the bf16 attention products (accumulating or not, with and without a row
// scale, both operand layouts, partial k ranges) in assembly and in the
// intrinsics it replaces, and returns how many gave different bits.
int bf16_tile_block_mismatches(int trials);

// For tests, on CPUs with AVX-512: the same for the f32 attention products'
// 6 x 4 blocks (tile_gemm_6x4_asm against tile_gemm_block's intrinsics).
int f32_tile_block_mismatches(int trials);

}  // namespace keel::backend::cpu
