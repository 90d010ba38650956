// Argument packing and dispatch geometry for the shaders in shaders/*.comp.
#include "backend/vulkan/vk_kernels.h"

#include <algorithm>
#include <limits>

#include "backend/vulkan/vk_pipeline.h"
#include "backend/vulkan/vk_stream.h"
#include "core/error.h"

namespace keel::vulkan {

namespace {

// Shaders index with 32-bit integers; larger tensors must be split by the caller.
uint32_t u32(int64_t v, const char* what) {
  if (v < 0 || v > int64_t(std::numeric_limits<uint32_t>::max()))
    fail<KernelError>("Vulkan: {} = {} does not fit the shaders' 32-bit indices", what, v);
  return uint32_t(v);
}

uint32_t is_bf16(DType dt, const char* kernel) {
  if (dt == DType::F32) return 0;
  if (dt == DType::BF16) return 1;
  fail<KernelError>("Vulkan {}: dtype {} not supported (f32, bf16)", kernel, dtype_name(dt));
}

// Grid-stride kernels: enough workgroups to fill any device, within limits.
uint32_t groups_for(int64_t n, int64_t per_group) {
  return uint32_t(std::clamp<int64_t>((n + per_group - 1) / per_group, 1, 65535));
}

constexpr int64_t kSumChunk = 4096;  // sum_squares_partial.comp's CHUNK

}  // namespace

void matmul(Context& ctx, const backend::MatmulArgs& a, const Buffer& A, const Buffer& B,
            const Buffer& C) {
  const bool ab16 = a.a_dtype == DType::BF16 && a.b_dtype == DType::BF16;
  const bool ab32 = a.a_dtype == DType::F32 && a.b_dtype == DType::F32;
  if (!(ab16 || (ab32 && a.c_dtype == DType::F32)) ||
      (a.c_dtype != DType::F32 && a.c_dtype != DType::BF16))
    fail<KernelError>("Vulkan matmul: dtypes ({}, {}, {}) not supported", dtype_name(a.a_dtype),
                      dtype_name(a.b_dtype), dtype_name(a.c_dtype));
  if (a.M == 0 || a.N == 0 || a.batch == 0) return;
  struct {
    uint32_t M, N, K, lda, ldb, ldc, stride_a, stride_b, stride_c;
    uint32_t trans_a, trans_b, ab_bf16, c_bf16;
    float alpha, beta;
  } pc{u32(a.M, "M"),
       u32(a.N, "N"),
       u32(a.K, "K"),
       u32(a.lda, "lda"),
       u32(a.ldb, "ldb"),
       u32(a.ldc, "ldc"),
       u32(a.stride_a, "stride_a"),
       u32(a.stride_b, "stride_b"),
       u32(a.stride_c, "stride_c"),
       a.trans_a,
       a.trans_b,
       ab16,
       a.c_dtype == DType::BF16,
       a.alpha,
       a.beta};
  // The shader forms batch * stride + row * ld + col in 32 bits: every
  // element it can touch must have an index below 2^32.
  const int64_t rows_a = a.trans_a ? a.K : a.M, rows_b = a.trans_b ? a.N : a.K;
  u32((a.batch - 1) * a.stride_a + rows_a * a.lda, "matmul A extent");
  u32((a.batch - 1) * a.stride_b + rows_b * a.ldb, "matmul B extent");
  u32((a.batch - 1) * a.stride_c + a.M * a.ldc, "matmul C extent");
  const auto& p = ctx.pipelines().get("matmul", 3, sizeof(pc));
  const uint32_t gx = u32((a.N + 31) / 32, "N tiles"), gy = u32((a.M + 31) / 32, "M tiles");
  const uint32_t gz = u32(a.batch, "batch");
  if (gx > 65535 || gy > 65535 || gz > 65535)
    fail<KernelError>("Vulkan matmul: grid {}x{}x{} exceeds 65535 workgroups per axis", gx, gy, gz);
  ctx.stream().dispatch(p, {A, B, C}, &pc, gx, gy, gz);
}

void add(Context& ctx, DType dt, const Buffer& a, const Buffer& b, const Buffer& y, int64_t n) {
  struct {
    uint32_t n, bf16;
  } pc{u32(n, "n"), is_bf16(dt, "add")};
  if (n == 0) return;
  const auto& p = ctx.pipelines().get("add", 3, sizeof(pc));
  ctx.stream().dispatch(p, {a, b, y}, &pc, groups_for(n, 256 * 4));
}

void rmsnorm_forward(Context& ctx, DType dt, const Buffer& x, const Buffer& w, const Buffer& y,
                     const Buffer& rstd, int64_t N, int64_t C, float eps) {
  struct {
    uint32_t N, C, bf16;
    float eps;
  } pc{u32(N, "N"), u32(C, "C"), is_bf16(dt, "rmsnorm"), eps};
  u32(N * C, "N*C");
  if (N == 0) return;
  const auto& p = ctx.pipelines().get("rmsnorm", 4, sizeof(pc));
  ctx.stream().dispatch(p, {x, w, y, rstd}, &pc, groups_for(N, 1));
}

int64_t sum_squares_partials(int64_t n) {
  return std::max<int64_t>(1, (n + kSumChunk - 1) / kSumChunk);
}

void sum_squares(Context& ctx, DType dt, const Buffer& x, int64_t n, const Buffer& partials,
                 const Buffer& out) {
  const int64_t g = sum_squares_partials(n);
  if (g > 65535) fail<KernelError>("Vulkan sum_squares: n = {} needs {} chunks, over 65535", n, g);
  struct {
    uint32_t n, bf16;
  } pc1{u32(n, "n"), is_bf16(dt, "sum_squares")};
  struct {
    uint32_t n;
  } pc2{uint32_t(g)};
  ctx.stream().dispatch(ctx.pipelines().get("sum_squares_partial", 2, sizeof(pc1)), {x, partials},
                        &pc1, uint32_t(g));
  ctx.stream().dispatch(ctx.pipelines().get("sum_reduce", 2, sizeof(pc2)), {partials, out}, &pc2,
                        1);
}

double sum_squares(Context& ctx, DType dt, const Buffer& x, int64_t n) {
  auto& pool = ctx.pool();
  Buffer partials = pool.alloc(uint64_t(sum_squares_partials(n)) * 4);
  Buffer out = pool.alloc(4);
  float r = 0;
  try {
    sum_squares(ctx, dt, x, n, partials, out);
    ctx.stream().download(out, &r, 4);
  } catch (...) {
    pool.free(partials);
    pool.free(out);
    throw;
  }
  pool.free(partials);
  pool.free(out);
  return r;
}

}  // namespace keel::vulkan
