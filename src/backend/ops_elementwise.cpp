// Validated entry points for elementwise kernels, cross-entropy, AdamW,
// reductions, casts and quantization (see ops.h for the shapes accepted).
#include <limits>

#include "backend/ops.h"
#include "backend/ops_check.h"

namespace keel::ops {

using backend::Kernel;
using detail::Check;
using detail::rows_of;

// All tensors named after x must have x's dtype and shape.
static void same_as_first(const Check& ck, std::initializer_list<detail::Named> ts) {
  const detail::Named& x = *ts.begin();
  ck.supported(x.t->dtype());
  for (const detail::Named& n : ts)
    ck.like(n.name, *n.t, x.t->dtype(), x.t->shape(), fmt::format("{}'s dtype and shape", x.name));
}

void gelu_forward(Backend& be, const Tensor& x, Tensor& y) {
  Check ck(be, Kernel::Gelu, {{"x", &x}, {"y", &y}});
  ck.defined_and_contiguous();
  same_as_first(ck, {{"x", &x}, {"y", &y}});
  be.gelu_forward(x.dtype(), x.raw(), y.raw(), x.numel());
}

void gelu_backward(Backend& be, const Tensor& x, const Tensor& dy, Tensor& dx) {
  Check ck(be, Kernel::Gelu, {{"x", &x}, {"dy", &dy}, {"dx", &dx}});
  ck.defined_and_contiguous();
  same_as_first(ck, {{"x", &x}, {"dy", &dy}, {"dx", &dx}});
  be.gelu_backward(x.dtype(), x.raw(), dy.raw(), dx.raw(), x.numel());
}

void silu_forward(Backend& be, const Tensor& x, Tensor& y) {
  Check ck(be, Kernel::Silu, {{"x", &x}, {"y", &y}});
  ck.defined_and_contiguous();
  same_as_first(ck, {{"x", &x}, {"y", &y}});
  be.silu_forward(x.dtype(), x.raw(), y.raw(), x.numel());
}

void silu_backward(Backend& be, const Tensor& x, const Tensor& dy, Tensor& dx) {
  Check ck(be, Kernel::Silu, {{"x", &x}, {"dy", &dy}, {"dx", &dx}});
  ck.defined_and_contiguous();
  same_as_first(ck, {{"x", &x}, {"dy", &dy}, {"dx", &dx}});
  be.silu_backward(x.dtype(), x.raw(), dy.raw(), dx.raw(), x.numel());
}

void swiglu_forward(Backend& be, const Tensor& gate, const Tensor& up, Tensor& y) {
  Check ck(be, Kernel::SwiGlu, {{"gate", &gate}, {"up", &up}, {"y", &y}});
  ck.defined_and_contiguous();
  same_as_first(ck, {{"gate", &gate}, {"up", &up}, {"y", &y}});
  be.swiglu_forward(gate.dtype(), gate.raw(), up.raw(), y.raw(), gate.numel());
}

void swiglu_backward(Backend& be, const Tensor& gate, const Tensor& up, const Tensor& dy,
                     Tensor& dgate, Tensor& dup) {
  Check ck(be, Kernel::SwiGlu,
           {{"gate", &gate}, {"up", &up}, {"dy", &dy}, {"dgate", &dgate}, {"dup", &dup}});
  ck.defined_and_contiguous();
  same_as_first(ck, {{"gate", &gate}, {"up", &up}, {"dy", &dy}, {"dgate", &dgate}, {"dup", &dup}});
  be.swiglu_backward(gate.dtype(), gate.raw(), up.raw(), dy.raw(), dgate.raw(), dup.raw(),
                     gate.numel());
}

void add(Backend& be, const Tensor& a, const Tensor& b, Tensor& y) {
  Check ck(be, Kernel::Add, {{"a", &a}, {"b", &b}, {"y", &y}});
  ck.defined_and_contiguous();
  same_as_first(ck, {{"a", &a}, {"b", &b}, {"y", &y}});
  be.add(a.dtype(), a.raw(), b.raw(), y.raw(), a.numel());
}

void accumulate(Backend& be, const Tensor& x, Tensor& y, float alpha) {
  Check ck(be, Kernel::Add, {{"x", &x}, {"y", &y}});
  ck.defined_and_contiguous();
  same_as_first(ck, {{"x", &x}, {"y", &y}});
  be.accumulate(x.dtype(), x.raw(), y.raw(), x.numel(), alpha);
}

void bias_add(Backend& be, Tensor& y, const Tensor& bias) {
  Check ck(be, Kernel::BiasAdd, {{"y", &y}, {"bias", &bias}});
  ck.defined_and_contiguous();
  ck.require(y.rank() >= 1, "y must have rank >= 1 (..., C)");
  ck.supported(y.dtype());
  const int64_t C = y.dim(-1);
  ck.like("bias", bias, y.dtype(), Shape{C}, fmt::format("y's dtype, C={}", C));
  be.bias_add(y.dtype(), y.raw(), bias.raw(), rows_of(y), C);
}

void bias_backward(Backend& be, const Tensor& dy, Tensor& dbias) {
  Check ck(be, Kernel::BiasAdd, {{"dy", &dy}, {"dbias", &dbias}});
  ck.defined_and_contiguous();
  ck.require(dy.rank() >= 1, "dy must have rank >= 1 (..., C)");
  ck.supported(dy.dtype());
  const int64_t C = dy.dim(-1);
  ck.like("dbias", dbias, DType::F32, Shape{C},
          fmt::format("parameter gradients are f32, C={}", C));
  be.bias_backward(dy.dtype(), dy.raw(), dbias.data<float>(), rows_of(dy), C);
}

// logits (N, V) and targets i32 (N) with every target < V (negative = ignored).
static void check_ce(const Check& ck, const Tensor& logits, const Tensor& targets) {
  ck.require(logits.rank() == 2, "logits must be 2-D (N, V)");
  ck.supported(logits.dtype());
  const int64_t N = logits.dim(0), V = logits.dim(1);
  ck.like("targets", targets, DType::I32, Shape{N}, fmt::format("one target per row, N={}", N));
  if (!targets.on_host()) return;  // checked before upload (the data loader)
  const int32_t* t = targets.data<int32_t>();
  for (int64_t i = 0; i < N; ++i)
    ck.require(t[i] < V, "targets[{}] = {} is out of range (must be < V={}; < 0 ignores the row)",
               i, t[i], V);
}

void cross_entropy_forward(Backend& be, const Tensor& logits, const Tensor& targets, Tensor& losses,
                           Tensor& lse) {
  Check ck(be, Kernel::CrossEntropy,
           {{"logits", &logits}, {"targets", &targets}, {"losses", &losses}, {"lse", &lse}});
  ck.defined_and_contiguous();
  check_ce(ck, logits, targets);
  const int64_t N = logits.dim(0);
  ck.like("losses", losses, DType::F32, Shape{N}, "f32 (N)");
  ck.like("lse", lse, DType::F32, Shape{N}, "f32 (N)");
  be.cross_entropy_forward(logits.dtype(), logits.raw(), targets.data<int32_t>(),
                           losses.data<float>(), lse.data<float>(), N, logits.dim(1));
}

void cross_entropy_backward(Backend& be, const Tensor& logits, const Tensor& targets,
                            const Tensor& lse, const Tensor& dloss, Tensor& dlogits) {
  Check ck(be, Kernel::CrossEntropy,
           {{"logits", &logits},
            {"targets", &targets},
            {"lse", &lse},
            {"dloss", &dloss},
            {"dlogits", &dlogits}});
  ck.defined_and_contiguous();
  check_ce(ck, logits, targets);
  const int64_t N = logits.dim(0);
  ck.like("lse", lse, DType::F32, Shape{N}, "f32 (N)");
  ck.like("dloss", dloss, DType::F32, Shape{N}, "f32 (N)");
  ck.like("dlogits", dlogits, logits.dtype(), logits.shape(), "logits' dtype and shape");
  be.cross_entropy_backward(logits.dtype(), logits.raw(), targets.data<int32_t>(),
                            lse.data<float>(), dloss.data<float>(), dlogits.raw(), N,
                            logits.dim(1));
}

void adamw_update(Backend& be, const backend::AdamWArgs& args, Tensor& param, const Tensor& grad,
                  Tensor& m, Tensor& v, Tensor& param_bf16) {
  Check ck(be, Kernel::AdamW,
           {{"param", &param}, {"grad", &grad}, {"m", &m}, {"v", &v}, {"param_bf16", &param_bf16}});
  ck.defined_and_contiguous({"param_bf16"});
  ck.require(param.dtype() == DType::F32, "param must be f32 (master weights)");
  ck.supported(DType::F32);
  const int64_t n = param.numel();
  for (const detail::Named& t : {detail::Named{"grad", &grad}, {"m", &m}, {"v", &v}})
    ck.f32_numel(t.name, *t.t, n, "param's element count");
  if (param_bf16.defined())
    ck.require(param_bf16.dtype() == DType::BF16 && param_bf16.numel() == n,
               "param_bf16 must be bf16 with {} elements (param's element count)", n);
  ck.require(args.t >= 1, "step t={} must be >= 1 (bias correction is 1-based)", args.t);
  ck.require(args.variance_keep > 0.f && args.variance_keep <= 1.f,
             "variance_keep={} must be in (0, 1]", args.variance_keep);
  backend::AdamWArgs a = args;
  a.n = n;
  be.adamw_update(a, param.data<float>(), grad.data<float>(), m.data<float>(), v.data<float>(),
                  param_bf16.defined() ? param_bf16.data<uint16_t>() : nullptr);
}

void reduce_forward(Backend& be, backend::ReduceOp op, const Tensor& x, Tensor& y) {
  Check ck(be, Kernel::Reduce, {{"x", &x}, {"y", &y}});
  ck.defined_and_contiguous();
  ck.require(x.rank() >= 1, "x must have rank >= 1 (..., C)");
  ck.supported(x.dtype());
  ck.require(op != backend::ReduceOp::Max || x.dim(-1) > 0, "max over an empty axis (C=0)");
  ck.f32_numel("y", y, rows_of(x), "one per row of x");
  be.reduce_forward(op, x.dtype(), x.raw(), y.data<float>(), rows_of(x), x.dim(-1));
}

void reduce_backward(Backend& be, backend::ReduceOp op, const Tensor& x, const Tensor& dy,
                     Tensor& dx) {
  Check ck(be, Kernel::Reduce, {{"x", &x}, {"dy", &dy}, {"dx", &dx}});
  ck.defined_and_contiguous();
  ck.require(x.rank() >= 1, "x must have rank >= 1 (..., C)");
  ck.supported(x.dtype());
  ck.f32_numel("dy", dy, rows_of(x), "one per row of x");
  ck.like("dx", dx, x.dtype(), x.shape(), "x's dtype and shape");
  be.reduce_backward(op, x.dtype(), x.raw(), dy.data<float>(), dx.raw(), rows_of(x), x.dim(-1));
}

double sum_squares(Backend& be, const Tensor& x) {
  Check ck(be, Kernel::SumSquares, {{"x", &x}});
  ck.defined_and_contiguous();
  ck.supported(x.dtype());
  return be.sum_squares_host(x.dtype(), x.raw(), x.numel());
}

static bool is_float(DType t) {
  return t == DType::F32 || t == DType::BF16 || t == DType::F16;
}

void cast(Backend& be, const Tensor& src, Tensor& dst) {
  Check ck(be, Kernel::Cast, {{"src", &src}, {"dst", &dst}});
  ck.defined_and_contiguous();
  ck.require(is_float(src.dtype()) && is_float(dst.dtype()),
             "src and dst dtypes must be among f32, bf16, f16");
  ck.require(src.shape() == dst.shape(), "dst must have src's shape {}", src.shape().str());
  ck.supported(src.dtype());
  ck.supported(dst.dtype());
  be.cast(src.dtype(), src.raw(), dst.dtype(), dst.raw(), src.numel());
}

static bool is_quant(DType t) {
  return t == DType::I8 || t == DType::Q4_0 || t == DType::Q8_0;
}

// w (N, K) f32 and q (N, K) quantized; scale f32 (N) for I8, undefined for blocked types.
static void check_quant(const Check& ck, const Tensor& w, const Tensor& q, const Tensor& scale,
                        const char* wname) {
  ck.require(w.rank() == 2 && w.dtype() == DType::F32, "{} must be f32 (N, K)", wname);
  ck.require(is_quant(q.dtype()), "q's dtype must be i8, q4_0 or q8_0");
  ck.supported(q.dtype());
  ck.require(q.shape() == w.shape(), "q must have {}'s shape {}", wname, w.shape().str());
  if (q.dtype() == DType::I8) {
    ck.like("scale", scale, DType::F32, Shape{w.dim(0)}, "per-row scales of i8 weights");
  } else {
    ck.require(w.dim(1) % kQBlock == 0, "K={} must be a multiple of {} for {}", w.dim(1), kQBlock,
               dtype_name(q.dtype()));
    ck.require(!scale.defined(), "scale must be undefined for {} (scales live in the blocks)",
               dtype_name(q.dtype()));
  }
}

void quantize(Backend& be, const Tensor& w, Tensor& q, Tensor& scale) {
  Check ck(be, Kernel::Quantize, {{"w", &w}, {"q", &q}, {"scale", &scale}});
  ck.defined_and_contiguous({"scale"});
  check_quant(ck, w, q, scale, "w");
  be.quantize(q.dtype(), w.data<float>(), q.raw(), scale.defined() ? scale.data<float>() : nullptr,
              w.dim(0), w.dim(1));
}

void dequantize(Backend& be, const Tensor& q, const Tensor& scale, Tensor& w) {
  Check ck(be, Kernel::Quantize, {{"q", &q}, {"scale", &scale}, {"w", &w}});
  ck.defined_and_contiguous({"scale"});
  check_quant(ck, w, q, scale, "w");
  be.dequantize(q.dtype(), q.raw(), scale.defined() ? scale.data<float>() : nullptr,
                w.data<float>(), w.dim(0), w.dim(1));
}

void qmatmul(Backend& be, const Tensor& x, const Tensor& wq, const Tensor& wscale, Tensor& y) {
  Check ck(be, Kernel::QMatmul, {{"x", &x}, {"wq", &wq}, {"wscale", &wscale}, {"y", &y}});
  ck.defined_and_contiguous({"wscale"});
  ck.require(x.rank() == 2 && x.dtype() == DType::F32, "x must be f32 (M, K)");
  ck.require(wq.rank() == 2 && is_quant(wq.dtype()), "wq must be i8, q4_0 or q8_0 (N, K)");
  ck.supported(wq.dtype());
  const int64_t M = x.dim(0), K = x.dim(1), N = wq.dim(0);
  ck.require(wq.dim(1) == K, "wq's K={} must equal x's K={}", wq.dim(1), K);
  if (wq.dtype() == DType::I8)
    ck.like("wscale", wscale, DType::F32, Shape{N}, "per-row scales of i8 weights");
  else
    ck.require(!wscale.defined(), "wscale must be undefined for {}", dtype_name(wq.dtype()));
  ck.like("y", y, DType::F32, Shape{M, N}, "f32 (M, N)");
  be.qmatmul(wq.dtype(), x.data<float>(), wq.raw(),
             wscale.defined() ? wscale.data<float>() : nullptr, y.data<float>(), M, N, K);
}

}  // namespace keel::ops
