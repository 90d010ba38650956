// Argument packing and dispatch geometry for the shaders in shaders/*.comp.
#include "backend/vulkan/vk_kernels.h"

#include <algorithm>
#include <cmath>
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

// A descriptor's offset must be a multiple of the device's storage-buffer
// alignment, but a tensor view may start anywhere: the range is bound from
// the aligned offset below it and the rest reaches the shader as an element
// offset (push constant).
struct Bound {
  Buffer range;
  uint32_t elem = 0;
};
Bound bind(Context& ctx, const Buffer& b, uint64_t elem_bytes) {
  const uint64_t align = std::max<uint64_t>(1, ctx.limits().minStorageBufferOffsetAlignment);
  const uint64_t base = b.offset / align * align, rest = b.offset - base;
  if (rest % elem_bytes != 0)
    fail<KernelError>("Vulkan: buffer offset {} is not a multiple of the element size {}", b.offset,
                      elem_bytes);
  Bound r{b, u32(int64_t(rest / elem_bytes), "element offset")};
  r.range.offset = base;
  r.range.size = (rest + b.size + 3) / 4 * 4;
  return r;
}
uint64_t elem_bytes(DType dt) {
  return dt == DType::BF16 ? 2 : 4;
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
