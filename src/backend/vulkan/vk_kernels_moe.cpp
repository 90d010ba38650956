// Argument packing and dispatch geometry for moe_route.comp,
// moe_permute.comp and grouped_matmul.comp.
#include "backend/vulkan/vk_dispatch.h"
#include "backend/vulkan/vk_kernels.h"
#include "backend/vulkan/vk_pipeline.h"
#include "backend/vulkan/vk_stream.h"

namespace keel::vulkan {

using namespace detail;

namespace {
struct RoutePush {
  uint32_t N, E, K, sigmoid_gate, norm_topk, has_in1, backward, seed_lo, seed_hi;
  float scale, noise;
  uint32_t o0, o1, os, oi, oo;
};
void moe_route(Context& ctx, const backend::MoeRouteArgs& a, const Buffer& in0, const Buffer& in1,
               bool has_in1, const Buffer& scores, const Buffer& idx, const Buffer& out,
               bool backward) {
  if (a.N == 0) return;
  u32(a.N * a.E, "N*E");
  const Bound b0 = bind(ctx, in0, 4), b1 = bind(ctx, in1, 4), bs = bind(ctx, scores, 4),
              bi = bind(ctx, idx, 4), bo = bind(ctx, out, 4);
  const RoutePush pc{u32(a.N, "N"),
                     u32(a.E, "E"),
                     u32(a.K, "K"),
                     a.gating == backend::MoeGating::Sigmoid,
                     a.norm_topk,
                     has_in1,
                     backward,
                     uint32_t(a.noise_seed),
                     uint32_t(a.noise_seed >> 32),
                     a.scale,
                     a.noise,
                     b0.elem,
                     b1.elem,
                     bs.elem,
                     bi.elem,
                     bo.elem};
  const auto& p = ctx.pipelines().get("moe_route", 5, sizeof(pc));
  ctx.stream().dispatch(p, {b0.range, b1.range, bs.range, bi.range, bo.range}, &pc,
                        groups_for(a.N, 256));
}
}  // namespace

void moe_route_forward(Context& ctx, const backend::MoeRouteArgs& a, const Buffer& logits,
                       const Buffer& bias, bool has_bias, const Buffer& scores, const Buffer& idx,
                       const Buffer& w) {
  moe_route(ctx, a, logits, bias, has_bias, scores, idx, w, false);
}
void moe_route_backward(Context& ctx, const backend::MoeRouteArgs& a, const Buffer& scores,
                        const Buffer& idx, const Buffer& dw, const Buffer& dscores,
                        bool has_dscores, const Buffer& dlogits) {
  moe_route(ctx, a, dw, dscores, has_dscores, scores, idx, dlogits, true);
}

void moe_permute(Context& ctx, uint32_t mode, DType dt, const Buffer& pos, const Buffer& w,
                 const Buffer& a, const Buffer& b, const Buffer& d, const Buffer& dw, int64_t N,
                 int64_t K, int64_t C) {
  if (N == 0 || K == 0 || C == 0) return;
  const uint64_t es = elem_bytes(dt);
  const Bound bp = bind(ctx, pos, 4), bw = bind(ctx, w, 4), ba = bind(ctx, a, es),
              bb = bind(ctx, b, es), bd = bind(ctx, d, es), bdw = bind(ctx, dw, 4);
  u32(N * K * C, "N*K*C");
  struct {
    uint32_t N, K, C, bf16, mode, op, ow, oa, ob, od, odw;
  } pc{u32(N, "N"), u32(K, "K"), u32(C, "C"), is_bf16(dt, "moe_permute"),
       mode,        bp.elem,     bw.elem,     ba.elem,
       bb.elem,     bd.elem,     bdw.elem};
  const int64_t threads = mode == 0 || mode == 3 ? N * K * C : mode == 4 ? N * K : N * C;
  const auto& p = ctx.pipelines().get("moe_permute", 6, sizeof(pc));
  ctx.stream().dispatch(p, {bp.range, bw.range, ba.range, bb.range, bd.range, bdw.range}, &pc,
                        groups_for(threads, 256));
}

void grouped_matmul(Context& ctx, uint32_t mode, const backend::GroupedMatmulArgs& a,
                    const Buffer& offsets, const Buffer& x, const Buffer& w, const Buffer& y,
                    const Buffer& dx, const Buffer& dw, int64_t rows) {
  if (a.G == 0 || a.N == 0 || a.K == 0) return;
  const uint64_t es = elem_bytes(a.dt);
  const Bound bo = bind(ctx, offsets, 4), bx = bind(ctx, x, es), bw = bind(ctx, w, es),
              by = bind(ctx, y, es), bdx = bind(ctx, dx, es), bdw = bind(ctx, dw, 4);
  u32(a.G * a.N * a.K, "G*N*K");
  u32(rows * std::max(a.N, a.K), "rows*N");
  struct {
    uint32_t G, N, K, bf16, mode, ooff, ox, ow, oy, odx, odw;
  } pc{u32(a.G, "G"), u32(a.N, "N"), u32(a.K, "K"), is_bf16(a.dt, "grouped_matmul"),
       mode,          bo.elem,       bx.elem,       bw.elem,
       by.elem,       bdx.elem,      bdw.elem};
  const int64_t threads = mode == 2 ? a.G * a.N * a.K : rows * (mode == 0 ? a.N : a.K);
  const auto& p = ctx.pipelines().get("grouped_matmul", 6, sizeof(pc));
  ctx.stream().dispatch(p, {bo.range, bx.range, bw.range, by.range, bdx.range, bdw.range}, &pc,
                        groups_for(threads, 256));
}

void moe_plan(Context& ctx, const Buffer& idx, int64_t N, int64_t K, int64_t E, int64_t capacity,
              const Buffer& pos, const Buffer& offsets) {
  if (E == 0) return;
  const Bound bi = bind(ctx, idx, 4), bp = bind(ctx, pos, 4), bo = bind(ctx, offsets, 4);
  u32(N * K, "N*K");
  struct {
    uint32_t N, K, E, capacity, mode, oi, op, oo;
  } pc{u32(N, "N"), u32(K, "K"), u32(E, "E"), u32(capacity, "capacity"),
       0,           bi.elem,     bp.elem,     bo.elem};
  const auto& p = ctx.pipelines().get("moe_plan", 3, sizeof(pc));
  ctx.stream().dispatch(p, {bi.range, bp.range, bo.range}, &pc, groups_for(E, 256));
  pc.mode = 1;
  ctx.stream().dispatch(p, {bi.range, bp.range, bo.range}, &pc, 1);
  pc.mode = 2;
  if (N * K > 0)
    ctx.stream().dispatch(p, {bi.range, bp.range, bo.range}, &pc, groups_for(N * K, 256));
}

namespace {
struct StatsPush {
  uint32_t N, E, K, T, mode, os, oi, op, ol, oa;
  float alpha, grad_scale;
};
void moe_stats(Context& ctx, StatsPush pc, const Buffer& scores, const Buffer& idx,
               const Buffer& plain, const Buffer& load, const Buffer& acc, uint32_t groups) {
  if (!ctx.info().float64)
    fail<KernelError>("Vulkan moe routing statistics: device {} has no shaderFloat64",
                      ctx.info().name);
  if (pc.E > 1024)
    fail<KernelError>("Vulkan moe routing statistics: {} experts (the shader holds 1024)", pc.E);
  const Bound bs = bind(ctx, scores, 4), bi = bind(ctx, idx, 4), bp = bind(ctx, plain, 4),
              bl = bind(ctx, load, 4), ba = bind(ctx, acc, 8);
  pc.os = bs.elem, pc.oi = bi.elem, pc.op = bp.elem, pc.ol = bl.elem, pc.oa = ba.elem;
  const auto& p = ctx.pipelines().get("moe_stats", 5, sizeof(pc));
  ctx.stream().dispatch(p, {bs.range, bi.range, bp.range, bl.range, ba.range}, &pc, groups);
}
}  // namespace

void moe_route_stats(Context& ctx, const backend::MoeRouteArgs& a, const Buffer& scores,
                     const Buffer& idx, const Buffer& plain_idx, const Buffer& pos,
                     const Buffer& load, const Buffer& stats) {
  if (a.N == 0) return;
  u32(a.N * a.E, "N*E");
  StatsPush pc{u32(a.N, "N"), u32(a.E, "E"), u32(a.K, "K"), 1, 0, 0, 0, 0, 0, 0, 0.f, 0.f};
  moe_stats(ctx, pc, scores, idx, plain_idx, load, stats, groups_for(a.E, 256));
  pc.mode = 1;
  moe_stats(ctx, pc, scores, idx, pos, load, stats, 1);
}

void moe_aux_loss(Context& ctx, const backend::MoeRouteArgs& a, int64_t T, float alpha,
                  float grad_scale, const Buffer& scores, const Buffer& idx, const Buffer& dscores,
                  const Buffer& loss) {
  if (a.N == 0 || T == 0) return;
  u32(a.N * a.E, "N*E");
  StatsPush pc{u32(a.N, "N"), u32(a.E, "E"), u32(a.K, "K"), u32(T, "T"), 2, 0, 0, 0, 0, 0,
               alpha,         grad_scale};
  moe_stats(ctx, pc, scores, idx, idx, dscores, loss, u32(a.N / T, "sequences"));
  pc.mode = 3;
  moe_stats(ctx, pc, scores, idx, idx, dscores, loss, 1);
}

}  // namespace keel::vulkan
