// Argument packing and dispatch geometry for quant.comp and qmatmul.comp.
#include "backend/vulkan/vk_dispatch.h"
#include "backend/vulkan/vk_kernels.h"
#include "backend/vulkan/vk_pipeline.h"
#include "backend/vulkan/vk_stream.h"

namespace keel::vulkan {

using namespace detail;

namespace {
uint32_t qdt_code(DType qdt, const char* kernel) {
  if (qdt == DType::I8) return 0;
  if (qdt == DType::Q8_0) return 1;
  if (qdt == DType::Q4_0) return 2;
  fail<KernelError>("Vulkan {}: dtype {} is not quantized (i8, q8_0, q4_0)", kernel,
                    dtype_name(qdt));
}
void need_8bit(Context& ctx, const char* kernel) {
  if (!ctx.info().storage_8bit)
    fail<KernelError>("Vulkan {}: device {} has no 8-bit storage buffers", kernel, ctx.info().name);
}
struct QuantPush {
  uint32_t N, K, qdt, mode, ow, oq, os;
};
void quant(Context& ctx, DType qdt, const Buffer& w, const Buffer& q, const Buffer& scale,
           int64_t N, int64_t K, uint32_t mode) {
  need_8bit(ctx, mode ? "dequantize" : "quantize");
  if (N == 0 || K == 0) return;
  const Bound bw = bind(ctx, w, 4), bq = bind(ctx, q, 1), bs = bind(ctx, scale, 4);
  u32(N * K, "N*K");
  const QuantPush pc{u32(N, "N"), u32(K, "K"), qdt_code(qdt, "quantize"), mode, bw.elem,
                     bq.elem,     bs.elem};
  const auto& p = ctx.pipelines().get("quant", 3, sizeof(pc));
  const uint32_t groups = mode == 1          ? groups_for(N * K, 256 * 4)
                          : qdt == DType::I8 ? groups_for(N, 1)
                                             : groups_for(N * K / 32, 256);
  ctx.stream().dispatch(p, {bw.range, bq.range, bs.range}, &pc, groups);
}
}  // namespace

void quantize(Context& ctx, DType qdt, const Buffer& w, const Buffer& q, const Buffer& scale,
              int64_t N, int64_t K) {
  quant(ctx, qdt, w, q, scale, N, K, 0);
}
void dequantize(Context& ctx, DType qdt, const Buffer& q, const Buffer& scale, const Buffer& w,
                int64_t N, int64_t K) {
  quant(ctx, qdt, w, q, scale, N, K, 1);
}

uint64_t qmatmul_scratch_bytes(DType qdt, int64_t M, int64_t K) {
  // I8: codes then the row scales (4-aligned); blocked: Q8_0 blocks of x.
  if (qdt == DType::I8) return (uint64_t(M * K) + 3) / 4 * 4 + 4 * uint64_t(M);
  return uint64_t(M * (K / 32) * 34);
}

void qmatmul(Context& ctx, DType qdt, const Buffer& x, const Buffer& wq, const Buffer& wscale,
             const Buffer& y, const Buffer& xq, const Buffer& xs, int64_t M, int64_t N, int64_t K) {
  need_8bit(ctx, "qmatmul");
  if (M == 0 || N == 0) return;
  const uint32_t code = qdt_code(qdt, "qmatmul");
  // x to int8 rows (I8 weights) or Q8_0 blocks (blocked weights).
  quant(ctx, qdt == DType::I8 ? DType::I8 : DType::Q8_0, x, xq, xs, M, K, 0);
  const Bound bx = bind(ctx, xq, 1), bxs = bind(ctx, xs, 4), bw = bind(ctx, wq, 1),
              bws = bind(ctx, wscale, 4), by = bind(ctx, y, 4);
  u32(M * N, "M*N");
  struct {
    uint32_t M, N, K, qdt, ox, oxs, ow, ows, oy;
  } pc{u32(M, "M"), u32(N, "N"), u32(K, "K"), code, bx.elem, bxs.elem, bw.elem, bws.elem, by.elem};
  const auto& p = ctx.pipelines().get("qmatmul", 7, sizeof(pc));
  ctx.stream().dispatch(p, {bx.range, bx.range, bxs.range, bw.range, bw.range, bws.range, by.range},
                        &pc, groups_for(M * N, 256 * 4));
}

}  // namespace keel::vulkan
