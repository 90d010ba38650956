// Argument packing and dispatch geometry for copy_rows.comp and
// mla_qkv.comp: the layout kernels that slice and assemble activations.
#include "backend/vulkan/vk_dispatch.h"
#include "backend/vulkan/vk_kernels.h"
#include "backend/vulkan/vk_pipeline.h"
#include "backend/vulkan/vk_stream.h"

namespace keel::vulkan {

using namespace detail;

void copy_rows(Context& ctx, DType dt, const Buffer& src, int64_t src_stride, const Buffer& dst,
               int64_t dst_stride, int64_t rows, int64_t cols, bool accumulate) {
  if (rows == 0 || cols == 0) return;
  const uint64_t es = elem_bytes(dt);
  const Bound bs = bind(ctx, src, es), bd = bind(ctx, dst, es);
  u32(rows * std::max(src_stride, dst_stride) + cols, "rows*stride");
  struct {
    uint32_t rows, cols, ss, ds, bf16, acc, os, od;
  } pc{u32(rows, "rows"),
       u32(cols, "cols"),
       u32(src_stride, "src_stride"),
       u32(dst_stride, "dst_stride"),
       is_bf16(dt, "copy_rows"),
       accumulate,
       bs.elem,
       bd.elem};
  const auto& p = ctx.pipelines().get("copy_rows", 2, sizeof(pc));
  ctx.stream().dispatch(p, {bs.range, bd.range}, &pc, groups_for(rows * cols, 256));
}

namespace {
void mla(Context& ctx, uint32_t mode, const backend::MlaArgs& a, const Buffer& in0,
         const Buffer& in1, const Buffer& in2, const Buffer& out, int64_t threads) {
  if (threads == 0) return;
  const uint64_t es = elem_bytes(a.dt);
  const Bound b0 = bind(ctx, in0, es), b1 = bind(ctx, in1, es), b2 = bind(ctx, in2, es),
              bo = bind(ctx, out, es);
  u32(a.N * 3 * a.NH * a.D(), "N*3*NH*D");
  struct {
    uint32_t N, NH, nope, rope, v, bf16, mode, oa, ob, oc, oo;
  } pc{u32(a.N, "N"),
       u32(a.NH, "NH"),
       u32(a.nope, "nope"),
       u32(a.rope, "rope"),
       u32(a.v, "v"),
       is_bf16(a.dt, "mla_qkv"),
       mode,
       b0.elem,
       b1.elem,
       b2.elem,
       bo.elem};
  const auto& p = ctx.pipelines().get("mla_qkv", 4, sizeof(pc));
  ctx.stream().dispatch(p, {b0.range, b1.range, b2.range, bo.range}, &pc, groups_for(threads, 256));
}
}  // namespace

void mla_qkv_forward(Context& ctx, const backend::MlaArgs& a, const Buffer& q, const Buffer& kv,
                     const Buffer& kpe, const Buffer& qkv) {
  mla(ctx, 0, a, q, kv, kpe, qkv, a.N * 3 * a.NH * a.D());
}

void mla_qkv_backward(Context& ctx, const backend::MlaArgs& a, const Buffer& g,
                      const Buffer& g_rope, const Buffer& dq, const Buffer& dkv,
                      const Buffer& dkpe) {
  mla(ctx, 1, a, g, g_rope, g, dq, a.N * a.NH * a.D());
  mla(ctx, 2, a, g, g_rope, g, dkv, a.N * a.NH * (a.nope + a.v));
  mla(ctx, 3, a, g, g_rope, g, dkpe, a.N * a.rope);
}

}  // namespace keel::vulkan
