// Argument packing and dispatch geometry for attention_forward.comp and
// attention_backward.comp.
#include "backend/vulkan/vk_dispatch.h"
#include "backend/vulkan/vk_kernels.h"
#include "backend/vulkan/vk_pipeline.h"
#include "backend/vulkan/vk_stream.h"

namespace keel::vulkan {

using namespace detail;

namespace {
struct AttnPush {
  uint32_t B, Tq, Tk, NH, NKV, HS;
  uint32_t q_row_stride, q_batch_stride, kv_row_stride, kv_batch_stride;
  float scale;
  uint32_t bf16, oq, ok, ov, oo, olse, odo, odq, odk, odv;
  uint32_t mode;
};
AttnPush attn_push(const backend::AttentionArgs& a) {
  if (a.HS > 512) fail<KernelError>("Vulkan attention: head size {} over 512", a.HS);
  if (a.NKV == 0 || a.NH % a.NKV != 0)
    fail<KernelError>("Vulkan attention: NH {} not a multiple of NKV {}", a.NH, a.NKV);
  if (a.Tq > a.Tk) fail<KernelError>("Vulkan attention: Tq {} > Tk {}", a.Tq, a.Tk);
  AttnPush pc{};
  pc.B = u32(a.B, "B");
  pc.Tq = u32(a.Tq, "Tq");
  pc.Tk = u32(a.Tk, "Tk");
  pc.NH = u32(a.NH, "NH");
  pc.NKV = u32(a.NKV, "NKV");
  pc.HS = u32(a.HS, "HS");
  pc.q_row_stride = u32(a.q_row_stride, "q_row_stride");
  pc.q_batch_stride = u32(a.q_batch_stride, "q_batch_stride");
  pc.kv_row_stride = u32(a.kv_row_stride, "kv_row_stride");
  pc.kv_batch_stride = u32(a.kv_batch_stride, "kv_batch_stride");
  pc.scale = a.scale;
  pc.bf16 = is_bf16(a.dt, "attention");
  return pc;
}
}  // namespace

void attention_forward(Context& ctx, const backend::AttentionArgs& a, const Buffer& q,
                       const Buffer& k, const Buffer& v, const Buffer& o, const Buffer& lse) {
  if (a.B == 0 || a.Tq == 0 || a.NH == 0) return;
  AttnPush pc = attn_push(a);
  const uint64_t es = elem_bytes(a.dt);
  const Bound bq = bind(ctx, q, es), bk = bind(ctx, k, es), bv = bind(ctx, v, es),
              bo = bind(ctx, o, es), bl = bind(ctx, lse, 4);
  pc.oq = bq.elem;
  pc.ok = bk.elem;
  pc.ov = bv.elem;
  pc.oo = bo.elem;
  pc.olse = bl.elem;
  const auto& p = ctx.pipelines().get("attention_forward", 5, sizeof(pc));
  ctx.stream().dispatch(p, {bq.range, bk.range, bv.range, bo.range, bl.range}, &pc,
                        groups_for(a.B * a.Tq * a.NH, 1));
}

void attention_backward(Context& ctx, const backend::AttentionArgs& a, const Buffer& dout,
                        const Buffer& q, const Buffer& k, const Buffer& v, const Buffer& o,
                        const Buffer& lse, const Buffer& dq, const Buffer& dk, const Buffer& dv) {
  if (a.B == 0 || a.Tq == 0 || a.NH == 0) return;
  AttnPush pc = attn_push(a);
  const uint64_t es = elem_bytes(a.dt);
  const Bound bq = bind(ctx, q, es), bk = bind(ctx, k, es), bv = bind(ctx, v, es),
              bo = bind(ctx, o, es), bl = bind(ctx, lse, 4), bdo = bind(ctx, dout, es),
              bdq = bind(ctx, dq, es), bdk = bind(ctx, dk, es), bdv = bind(ctx, dv, es);
  pc.oq = bq.elem;
  pc.ok = bk.elem;
  pc.ov = bv.elem;
  pc.oo = bo.elem;
  pc.olse = bl.elem;
  pc.odo = bdo.elem;
  pc.odq = bdq.elem;
  pc.odk = bdk.elem;
  pc.odv = bdv.elem;
  const auto& p = ctx.pipelines().get("attention_backward", 9, sizeof(pc));
  const std::initializer_list<Buffer> bufs = {bq.range,  bk.range,  bv.range,  bo.range, bl.range,
                                              bdo.range, bdq.range, bdk.range, bdv.range};
  pc.mode = 0;
  ctx.stream().dispatch(p, bufs, &pc, groups_for(a.B * a.Tq * a.NH, 1));
  pc.mode = 1;
  ctx.stream().dispatch(p, bufs, &pc, groups_for(a.B * a.Tk * a.NKV, 1));
}

}  // namespace keel::vulkan
