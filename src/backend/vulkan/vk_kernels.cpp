// Argument packing and dispatch geometry for the dense, elementwise, norm,
// loss and optimizer shaders in shaders/*.comp.
#include <cmath>

#include "backend/vulkan/vk_dispatch.h"
#include "backend/vulkan/vk_kernels.h"
#include "backend/vulkan/vk_pipeline.h"
#include "backend/vulkan/vk_stream.h"

namespace keel::vulkan {

using namespace detail;

void matmul(Context& ctx, const backend::MatmulArgs& a, const Buffer& A, const Buffer& B,
            const Buffer& C) {
  const bool ab16 = a.a_dtype == DType::BF16 && a.b_dtype == DType::BF16;
  const bool ab32 = a.a_dtype == DType::F32 && a.b_dtype == DType::F32;
  if (!(ab16 || (ab32 && a.c_dtype == DType::F32)) ||
      (a.c_dtype != DType::F32 && a.c_dtype != DType::BF16))
    fail<KernelError>("Vulkan matmul: dtypes ({}, {}, {}) not supported", dtype_name(a.a_dtype),
                      dtype_name(a.b_dtype), dtype_name(a.c_dtype));
  if (a.M == 0 || a.N == 0 || a.batch == 0) return;
  const Bound ba = bind(ctx, A, elem_bytes(a.a_dtype)), bb = bind(ctx, B, elem_bytes(a.b_dtype)),
              bc = bind(ctx, C, elem_bytes(a.c_dtype));
  struct {
    uint32_t M, N, K, lda, ldb, ldc, stride_a, stride_b, stride_c;
    uint32_t trans_a, trans_b, ab_bf16, c_bf16;
    float alpha, beta;
    uint32_t off_a, off_b, off_c;
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
       a.beta,
       ba.elem,
       bb.elem,
       bc.elem};
  // The shader forms offset + batch * stride + row * ld + col in 32 bits:
  // every element it can touch must have an index below 2^32.
  const int64_t rows_a = a.trans_a ? a.K : a.M, rows_b = a.trans_b ? a.N : a.K;
  u32(ba.elem + (a.batch - 1) * a.stride_a + rows_a * a.lda, "matmul A extent");
  u32(bb.elem + (a.batch - 1) * a.stride_b + rows_b * a.ldb, "matmul B extent");
  u32(bc.elem + (a.batch - 1) * a.stride_c + a.M * a.ldc, "matmul C extent");
  const auto& p = ctx.pipelines().get("matmul", 3, sizeof(pc));
  const uint32_t gx = u32((a.N + 31) / 32, "N tiles"), gy = u32((a.M + 31) / 32, "M tiles");
  const uint32_t gz = u32(a.batch, "batch");
  if (gx > 65535 || gy > 65535 || gz > 65535)
    fail<KernelError>("Vulkan matmul: grid {}x{}x{} exceeds 65535 workgroups per axis", gx, gy, gz);
  ctx.stream().dispatch(p, {ba.range, bb.range, bc.range}, &pc, gx, gy, gz);
}

void add(Context& ctx, DType dt, const Buffer& a, const Buffer& b, const Buffer& y, int64_t n) {
  if (n == 0) return;
  const uint64_t es = elem_bytes(dt);
  const Bound ba = bind(ctx, a, es), bb = bind(ctx, b, es), by = bind(ctx, y, es);
  struct {
    uint32_t n, bf16, oa, ob, oy;
  } pc{u32(n, "n"), is_bf16(dt, "add"), ba.elem, bb.elem, by.elem};
  const auto& p = ctx.pipelines().get("add", 3, sizeof(pc));
  ctx.stream().dispatch(p, {ba.range, bb.range, by.range}, &pc, groups_for(n, 256 * 4));
}

void accumulate(Context& ctx, DType dt, const Buffer& x, const Buffer& y, int64_t n, float alpha) {
  if (n == 0) return;
  const uint64_t es = elem_bytes(dt);
  const Bound bx = bind(ctx, x, es), by = bind(ctx, y, es);
  struct {
    uint32_t n, bf16, ox, oy;
    float alpha;
  } pc{u32(n, "n"), is_bf16(dt, "accumulate"), bx.elem, by.elem, alpha};
  const auto& p = ctx.pipelines().get("accumulate", 2, sizeof(pc));
  ctx.stream().dispatch(p, {bx.range, by.range}, &pc, groups_for(n, 256 * 4));
}

namespace {
void activation(Context& ctx, Activation f, DType dt, const Buffer& x, const Buffer* dy,
                const Buffer& y, int64_t n) {
  if (n == 0) return;
  const uint64_t es = elem_bytes(dt);
  const Bound bx = bind(ctx, x, es), by = bind(ctx, y, es);
  // Forward reads no dy; x stands in so every binding the shader names is valid.
  const Bound bd = dy ? bind(ctx, *dy, es) : bx;
  struct {
    uint32_t n, bf16, op, backward, ox, od, oy;
  } pc{u32(n, "n"), is_bf16(dt, "activation"), uint32_t(f), dy != nullptr, bx.elem, bd.elem,
       by.elem};
  const auto& p = ctx.pipelines().get("activation", 3, sizeof(pc));
  ctx.stream().dispatch(p, {bx.range, bd.range, by.range}, &pc, groups_for(n, 256 * 4));
}
}  // namespace

void activation_forward(Context& ctx, Activation f, DType dt, const Buffer& x, const Buffer& y,
                        int64_t n) {
  activation(ctx, f, dt, x, nullptr, y, n);
}
void activation_backward(Context& ctx, Activation f, DType dt, const Buffer& x, const Buffer& dy,
                         const Buffer& dx, int64_t n) {
  activation(ctx, f, dt, x, &dy, dx, n);
}

namespace {
void swiglu(Context& ctx, DType dt, const Buffer& gate, const Buffer& up, const Buffer* dy,
            const Buffer& y, const Buffer* dup, int64_t n) {
  if (n == 0) return;
  const uint64_t es = elem_bytes(dt);
  const Bound bg = bind(ctx, gate, es), bu = bind(ctx, up, es), by = bind(ctx, y, es);
  const Bound bd = dy ? bind(ctx, *dy, es) : bg, bz = dup ? bind(ctx, *dup, es) : by;
  struct {
    uint32_t n, bf16, backward, og, ou, od, oy, oz;
  } pc{u32(n, "n"), is_bf16(dt, "swiglu"), dy != nullptr, bg.elem, bu.elem, bd.elem, by.elem,
       bz.elem};
  const auto& p = ctx.pipelines().get("swiglu", 5, sizeof(pc));
  ctx.stream().dispatch(p, {bg.range, bu.range, bd.range, by.range, bz.range}, &pc,
                        groups_for(n, 256 * 4));
}
}  // namespace

void swiglu_forward(Context& ctx, DType dt, const Buffer& gate, const Buffer& up, const Buffer& y,
                    int64_t n) {
  swiglu(ctx, dt, gate, up, nullptr, y, nullptr, n);
}
void swiglu_backward(Context& ctx, DType dt, const Buffer& gate, const Buffer& up, const Buffer& dy,
                     const Buffer& dgate, const Buffer& dup, int64_t n) {
  swiglu(ctx, dt, gate, up, &dy, dgate, &dup, n);
}

void cast(Context& ctx, DType src_dt, const Buffer& src, DType dst_dt, const Buffer& dst,
          int64_t n) {
  if (n == 0) return;
  const Bound bs = bind(ctx, src, elem_bytes(src_dt)), bd = bind(ctx, dst, elem_bytes(dst_dt));
  struct {
    uint32_t n, src_bf16, dst_bf16, os, od;
  } pc{u32(n, "n"), is_bf16(src_dt, "cast"), is_bf16(dst_dt, "cast"), bs.elem, bd.elem};
  const auto& p = ctx.pipelines().get("cast", 2, sizeof(pc));
  ctx.stream().dispatch(p, {bs.range, bd.range}, &pc, groups_for(n, 256 * 4));
}

void rmsnorm_forward(Context& ctx, DType dt, const Buffer& x, const Buffer& w, const Buffer& y,
                     const Buffer& rstd, int64_t N, int64_t C, float eps) {
  if (N == 0) return;
  const uint64_t es = elem_bytes(dt);
  const Bound bx = bind(ctx, x, es), bw = bind(ctx, w, es), by = bind(ctx, y, es),
              br = bind(ctx, rstd, 4);
  struct {
    uint32_t N, C, bf16;
    float eps;
    uint32_t ox, ow, oy, orstd;
  } pc{u32(N, "N"), u32(C, "C"), is_bf16(dt, "rmsnorm"), eps, bx.elem, bw.elem, by.elem, br.elem};
  u32(bx.elem + N * C, "x extent");
  u32(by.elem + N * C, "y extent");
  const auto& p = ctx.pipelines().get("rmsnorm", 4, sizeof(pc));
  ctx.stream().dispatch(p, {bx.range, bw.range, by.range, br.range}, &pc, groups_for(N, 1));
}

void rmsnorm_backward(Context& ctx, DType dt, const Buffer& dy, const Buffer& x, const Buffer& w,
                      const Buffer& rstd, const Buffer& dx, const Buffer& dw, int64_t N,
                      int64_t C) {
  if (N == 0 || C == 0) return;
  const uint64_t es = elem_bytes(dt);
  const Bound bdy = bind(ctx, dy, es), bx = bind(ctx, x, es), bw = bind(ctx, w, es),
              br = bind(ctx, rstd, 4), bdx = bind(ctx, dx, es), bdw = bind(ctx, dw, 4);
  u32(bx.elem + N * C, "x extent");
  struct {
    uint32_t N, C, bf16, pass, ody, ox, ow, orstd, odx, odw;
  } pc{u32(N, "N"), u32(C, "C"), is_bf16(dt, "rmsnorm"), 0, bdy.elem, bx.elem, bw.elem, br.elem,
       bdx.elem,    bdw.elem};
  const auto& p = ctx.pipelines().get("rmsnorm_backward", 6, sizeof(pc));
  const std::initializer_list<Buffer> bufs = {bdy.range, bx.range,  bw.range,
                                              br.range,  bdx.range, bdw.range};
  ctx.stream().dispatch(p, bufs, &pc, groups_for(N, 1));
  pc.pass = 1;
  ctx.stream().dispatch(p, bufs, &pc, groups_for(C, 256));
}

namespace {
void embedding(Context& ctx, DType dt, const Buffer& ids, const Buffer& src, const Buffer& dst,
               int64_t n, int64_t C, bool backward) {
  if (n == 0 || C == 0) return;
  const uint64_t es = elem_bytes(dt);
  const Bound bi = bind(ctx, ids, 4), bs = bind(ctx, src, es),
              bd = bind(ctx, dst, backward ? 4 : es);
  u32(n * C, "n*C");
  struct {
    uint32_t n, C, bf16, backward, oi, os, od;
  } pc{u32(n, "n"), u32(C, "C"), is_bf16(dt, "embedding"), backward, bi.elem, bs.elem, bd.elem};
  const auto& p = ctx.pipelines().get("embedding", 3, sizeof(pc));
  ctx.stream().dispatch(p, {bi.range, bs.range, bd.range}, &pc,
                        backward ? groups_for(C, 256) : groups_for(n * C, 256 * 4));
}
}  // namespace

void embedding_forward(Context& ctx, DType dt, const Buffer& ids, const Buffer& table,
                       const Buffer& out, int64_t n, int64_t C) {
  embedding(ctx, dt, ids, table, out, n, C, false);
}
void embedding_backward(Context& ctx, DType dt, const Buffer& ids, const Buffer& dout,
                        const Buffer& dtable, int64_t n, int64_t C) {
  embedding(ctx, dt, ids, dout, dtable, n, C, true);
}

namespace {
void bias(Context& ctx, DType dt, const Buffer& src, const Buffer& dst, int64_t N, int64_t C,
          bool backward) {
  if (N == 0 || C == 0) return;
  const uint64_t es = elem_bytes(dt);
  const Bound bs = bind(ctx, src, es), bd = bind(ctx, dst, backward ? 4 : es);
  u32(N * C, "N*C");
  struct {
    uint32_t N, C, bf16, backward, os, od;
  } pc{u32(N, "N"), u32(C, "C"), is_bf16(dt, "bias_add"), backward, bs.elem, bd.elem};
  const auto& p = ctx.pipelines().get("bias", 2, sizeof(pc));
  ctx.stream().dispatch(p, {bs.range, bd.range}, &pc,
                        backward ? groups_for(C, 256) : groups_for(N * C, 256 * 4));
}
}  // namespace

void bias_add(Context& ctx, DType dt, const Buffer& y, const Buffer& b, int64_t N, int64_t C) {
  bias(ctx, dt, b, y, N, C, false);
}
void bias_backward(Context& ctx, DType dt, const Buffer& dy, const Buffer& dbias, int64_t N,
                   int64_t C) {
  bias(ctx, dt, dy, dbias, N, C, true);
}

void layernorm_forward(Context& ctx, DType dt, const Buffer& x, const Buffer& w, const Buffer& b,
                       bool has_bias, const Buffer& y, const Buffer& mean, const Buffer& rstd,
                       int64_t N, int64_t C, float eps) {
  if (N == 0) return;
  const uint64_t es = elem_bytes(dt);
  const Bound bx = bind(ctx, x, es), bw = bind(ctx, w, es), bb = bind(ctx, b, es),
              by = bind(ctx, y, es), bm = bind(ctx, mean, 4), br = bind(ctx, rstd, 4);
  u32(bx.elem + N * C, "x extent");
  struct {
    uint32_t N, C, bf16, pass, has_bias;
    float eps;
    uint32_t ox, ow, ob, oy, om, orr, odw, odb;
  } pc{u32(N, "N"),
       u32(C, "C"),
       is_bf16(dt, "layernorm"),
       0,
       has_bias,
       eps,
       bx.elem,
       bw.elem,
       bb.elem,
       by.elem,
       bm.elem,
       br.elem,
       0,
       0};
  const auto& p = ctx.pipelines().get("layernorm", 8, sizeof(pc));
  // dw/db are not touched by the forward pass: mean/rstd stand in.
  ctx.stream().dispatch(
      p, {bx.range, bw.range, bb.range, by.range, bm.range, br.range, bm.range, br.range}, &pc,
      groups_for(N, 1));
}

void layernorm_backward(Context& ctx, DType dt, const Buffer& dy, const Buffer& x, const Buffer& w,
                        const Buffer& mean, const Buffer& rstd, const Buffer& dx, const Buffer& dw,
                        const Buffer& db, bool has_bias, int64_t N, int64_t C) {
  if (N == 0 || C == 0) return;
  const uint64_t es = elem_bytes(dt);
  const Bound bx = bind(ctx, x, es), bw = bind(ctx, w, es), bdy = bind(ctx, dy, es),
              bdx = bind(ctx, dx, es), bm = bind(ctx, mean, 4), br = bind(ctx, rstd, 4),
              bdw = bind(ctx, dw, 4), bdb = bind(ctx, db, 4);
  u32(bx.elem + N * C, "x extent");
  struct {
    uint32_t N, C, bf16, pass, has_bias;
    float eps;
    uint32_t ox, ow, ob, oy, om, orr, odw, odb;
  } pc{u32(N, "N"), u32(C, "C"), is_bf16(dt, "layernorm"),
       1,           has_bias,    0.f,
       bx.elem,     bw.elem,     bdy.elem,
       bdx.elem,    bm.elem,     br.elem,
       bdw.elem,    bdb.elem};
  const auto& p = ctx.pipelines().get("layernorm", 8, sizeof(pc));
  const std::initializer_list<Buffer> bufs = {bx.range, bw.range, bdy.range, bdx.range,
                                              bm.range, br.range, bdw.range, bdb.range};
  ctx.stream().dispatch(p, bufs, &pc, groups_for(N, 1));
  pc.pass = 2;
  ctx.stream().dispatch(p, bufs, &pc, groups_for(C, 256));
}

void rope(Context& ctx, const backend::RopeArgs& a, const Buffer& freq, const Buffer& x,
          const Buffer& y, bool backward) {
  const int64_t pairs = a.B * a.T * a.NH * (a.HS / 2);
  if (pairs == 0) return;
  const uint64_t es = elem_bytes(a.dt);
  const Bound bx = bind(ctx, x, es), by = bind(ctx, y, es), bf = bind(ctx, freq, 8);
  struct {
    uint32_t B, T, NH, HS, row_stride, batch_stride, pos0, bf16, backward, ox, oy;
  } pc{u32(a.B, "B"),
       u32(a.T, "T"),
       u32(a.NH, "NH"),
       u32(a.HS, "HS"),
       u32(a.row_stride, "row_stride"),
       u32(a.batch_stride, "batch_stride"),
       u32(a.pos0, "pos0"),
       is_bf16(a.dt, "rope"),
       backward,
       bx.elem,
       by.elem};
  u32(pairs, "pairs");
  u32(a.pos0 + a.T, "last position");
  const auto& p = ctx.pipelines().get("rope", 3, sizeof(pc));
  ctx.stream().dispatch(p, {bx.range, by.range, bf.range}, &pc, groups_for(pairs, 256 * 4));
}

namespace {
void cross_entropy(Context& ctx, DType dt, const Buffer& logits, const Buffer& targets,
                   const Buffer& loss, const Buffer& lse, const Buffer* dlogits, int64_t N,
                   int64_t V) {
  if (N == 0) return;
  const Bound bl = bind(ctx, logits, elem_bytes(dt)), bt = bind(ctx, targets, 4),
              bs = bind(ctx, loss, 4), be = bind(ctx, lse, 4);
  const Bound bd = dlogits ? bind(ctx, *dlogits, elem_bytes(dt)) : bs;
  u32(bl.elem + N * V, "logits extent");
  struct {
    uint32_t N, V, bf16, backward, ol, ot, oloss, olse, od;
  } pc{u32(N, "N"),
       u32(V, "V"),
       is_bf16(dt, "cross_entropy"),
       dlogits != nullptr,
       bl.elem,
       bt.elem,
       bs.elem,
       be.elem,
       bd.elem};
  const auto& p = ctx.pipelines().get("cross_entropy", 5, sizeof(pc));
  ctx.stream().dispatch(p, {bl.range, bt.range, bs.range, be.range, bd.range}, &pc,
                        groups_for(N, 1));
}
}  // namespace

void cross_entropy_forward(Context& ctx, DType dt, const Buffer& logits, const Buffer& targets,
                           const Buffer& losses, const Buffer& lse, int64_t N, int64_t V) {
  cross_entropy(ctx, dt, logits, targets, losses, lse, nullptr, N, V);
}
void cross_entropy_backward(Context& ctx, DType dt, const Buffer& logits, const Buffer& targets,
                            const Buffer& lse, const Buffer& dloss, const Buffer& dlogits,
                            int64_t N, int64_t V) {
  cross_entropy(ctx, dt, logits, targets, dloss, lse, &dlogits, N, V);
}

void adamw(Context& ctx, const backend::AdamWArgs& a, const Buffer& param, const Buffer& grad,
           const Buffer& m, const Buffer& v, const Buffer* param_bf16) {
  if (a.n == 0) return;
  const Bound bp = bind(ctx, param, 4), bg = bind(ctx, grad, 4), bm = bind(ctx, m, 4),
              bv = bind(ctx, v, 4);
  const Bound b16 = param_bf16 ? bind(ctx, *param_bf16, 2) : bg;
  // Bias corrections in f64 on the host, as the oracle forms them.
  const double bc1 = 1.0 - std::pow(double(a.beta1), double(a.t));
  const double bc2 = 1.0 - std::pow(double(a.beta2), double(a.t));
  struct {
    uint32_t n, write_bf16;
    float lr, beta1, beta2, eps, weight_decay, grad_scale, bc1, bc2, keep;
    uint32_t op, og, om, ov, o16;
  } pc{u32(a.n, "n"),
       param_bf16 != nullptr,
       a.lr,
       a.beta1,
       a.beta2,
       a.eps,
       a.weight_decay,
       a.grad_scale,
       float(bc1),
       float(bc2),
       a.variance_keep,
       bp.elem,
       bg.elem,
       bm.elem,
       bv.elem,
       b16.elem};
  const auto& p = ctx.pipelines().get("adamw", 5, sizeof(pc));
  ctx.stream().dispatch(p, {bp.range, bg.range, bm.range, bv.range, b16.range}, &pc,
                        groups_for(a.n, 256 * 4));
}

void reduce(Context& ctx, backend::ReduceOp op, DType dt, const Buffer& x, const Buffer& y,
            const Buffer& dx, int64_t N, int64_t C, bool backward) {
  if (N == 0) return;
  const uint64_t es = elem_bytes(dt);
  const Bound bx = bind(ctx, x, es), by = bind(ctx, y, 4), bd = bind(ctx, dx, es);
  u32(bx.elem + N * C, "x extent");
  struct {
    uint32_t N, C, bf16, op, backward, ox, oy, od;
  } pc{u32(N, "N"), u32(C, "C"), is_bf16(dt, "reduce"), uint32_t(op), backward, bx.elem,
       by.elem,     bd.elem};
  const auto& p = ctx.pipelines().get("reduce", 3, sizeof(pc));
  ctx.stream().dispatch(p, {bx.range, by.range, bd.range}, &pc, groups_for(N, 1));
}

namespace {
constexpr int64_t kSumChunk = 4096;  // sum_squares_partial.comp's CHUNK
}  // namespace

int64_t sum_squares_partials(int64_t n) {
  return std::max<int64_t>(1, (n + kSumChunk - 1) / kSumChunk);
}

void sum_squares(Context& ctx, DType dt, const Buffer& x, int64_t n, const Buffer& partials,
                 const Buffer& out) {
  if (!ctx.info().float64)
    fail<KernelError>("Vulkan sum_squares: device {} has no shaderFloat64", ctx.info().name);
  const int64_t g = sum_squares_partials(n);
  if (g > 65535) fail<KernelError>("Vulkan sum_squares: n = {} needs {} chunks, over 65535", n, g);
  const Bound bx = bind(ctx, x, elem_bytes(dt)), bp = bind(ctx, partials, 8),
              bo = bind(ctx, out, 8);
  struct {
    uint32_t n, bf16, ox;
  } pc1{u32(n, "n"), is_bf16(dt, "sum_squares"), bx.elem};
  struct {
    uint32_t n, oo;
  } pc2{uint32_t(g), bo.elem};
  ctx.stream().dispatch(ctx.pipelines().get("sum_squares_partial", 2, sizeof(pc1)),
                        {bx.range, bp.range}, &pc1, uint32_t(g));
  ctx.stream().dispatch(ctx.pipelines().get("sum_reduce", 2, sizeof(pc2)), {bp.range, bo.range},
                        &pc2, 1);
}

double sum_squares(Context& ctx, DType dt, const Buffer& x, int64_t n) {
  auto& pool = ctx.pool();
  Buffer partials = pool.alloc(uint64_t(sum_squares_partials(n)) * 8);
  Buffer out = pool.alloc(8);
  double r = 0;
  try {
    sum_squares(ctx, dt, x, n, partials, out);
    ctx.stream().download(out, &r, 8);
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
