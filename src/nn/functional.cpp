// Forward and backward of the dense differentiable ops: embedding, add, linear,
// norms and activations. Attention and the loss are in functional_attention.cpp.
#include "nn/functional.h"

#include "backend/ops.h"
#include "core/error.h"
#include "nn/gemm.h"

namespace keel::nn {

namespace {

Shape with_last(const Shape& s, int64_t last) {
  std::vector<int64_t> d = s.dims();
  d.back() = last;
  return Shape(d);
}

int64_t rows_of(const Tensor& t) {
  return t.dim(-1) == 0 ? 0 : t.numel() / t.dim(-1);
}

// ---- embedding
void embedding_bw(Tape& tape, const Node& n) {
  if (!tape.has_grad(n.out)) return;
  ops::embedding_backward(tape.backend(), n.saved[0], tape.grad(n.out), n.param[0]->grad);
}

// ---- add: the output gradient passes to a uncopied when a has none yet.
void add_bw(Tape& tape, const Node& n) {
  if (!tape.has_grad(n.out)) return;
  const Tensor dy = tape.grad(n.out);
  if (!tape.has_grad(n.in[0]))
    tape.alias_grad(n.in[0], dy);
  else
    ops::accumulate(tape.backend(), dy, tape.grad(n.in[0]));
  ops::accumulate(tape.backend(), dy, tape.grad(n.in[1]));
}

// ---- linear: i[0] = col0, i[1] = ld of y, i[2] = out features.
void linear_bw(Tape& tape, const Node& n) {
  if (!tape.has_grad(n.out)) return;
  backend::Backend& be = tape.backend();
  Parameter& w = *n.param[0];
  const Tensor& x = tape.value(n.in[0]);
  Tensor dy = tape.grad(n.out);
  const int64_t col0 = n.i[0], ld = n.i[1], out = n.i[2];
  const int64_t in = x.dim(-1), rows = rows_of(x);
  if (dy.dtype() != x.dtype()) {  // f32 logits over bf16 activations
    Tensor c = tape.scratch(dy.shape(), x.dtype());
    ops::cast(be, dy, c);
    dy = c;
  }
  const DType dt = x.dtype();
  const char* dyp = static_cast<const char*>(dy.raw()) + col0 * int64_t(dtype_size(dt));
  // dx (rows, in) += dy (rows, out) @ w (out, in); a new dx is written, not zeroed and added to.
  bool fresh = false;
  void* dx = tape.grad_for_write(n.in[0], &fresh).raw();
  gemm(be, "linear dx", false, false, rows, in, out, dyp, ld, dt, w.compute.raw(), in,
       w.compute.dtype(), dx, in, dt, fresh ? 0.f : 1.f);
  // dw (out, in) += dy^T (out, rows) @ x (rows, in); written, not added to, while stale.
  const bool overwrite = w.grad_stale;
  w.grad_stale = false;
  gemm(be, "linear dw", true, false, out, in, rows, dyp, ld, dt, x.raw(), in, dt, w.grad.raw(), in,
       DType::F32, overwrite ? 0.f : 1.f);
  if (n.param[1]) ops::bias_backward(be, dy, n.param[1]->grad);
}

void linear_fw(Tape& tape, const Value& x, Parameter& w, Parameter* bias, const Value& y,
               int64_t col0) {
  const int64_t out = w.value.dim(0), in = w.value.dim(1);
  const Tensor& xt = x.t;
  if (xt.dim(-1) != in || w.compute.dtype() != xt.dtype())
    fail<KernelError>(
        "[linear {}] x {} does not match weight {} (need (..., {}) of the weight's dtype)", w.name,
        xt.desc(), w.compute.desc(), in);
  const int64_t ld = y.t.dim(-1), rows = rows_of(xt);
  if (rows_of(y.t) != rows || col0 + out > ld)
    fail<KernelError>("[linear {}] output {} cannot hold columns [{}, {}) of {} rows", w.name,
                      y.t.desc(), col0, col0 + out, rows);
  const DType ydt = y.t.dtype();
  char* yp = static_cast<char*>(y.t.raw()) + col0 * int64_t(dtype_size(ydt));
  // y (rows, out) = x (rows, in) @ w^T
  gemm(tape.backend(), "linear", false, true, rows, out, in, xt.raw(), in, xt.dtype(),
       w.compute.raw(), in, w.compute.dtype(), yp, ld, ydt, 0.f);
  if (bias) {
    if (col0 != 0 || ld != out || bias->compute.dtype() != ydt)
      fail<KernelError>("[linear {}] a bias needs a whole output of the activation dtype", w.name);
    Tensor yt = y.t;
    ops::bias_add(tape.backend(), yt, bias->compute);
  }
  Node n;
  n.backward = &linear_bw;
  n.in[0] = x.id;
  n.out = y.id;
  n.param[0] = &w;
  n.param[1] = bias;
  n.overwrites_param0_grad = true;
  n.i[0] = col0;
  n.i[1] = ld;
  n.i[2] = out;
  tape.record(n);
}

// ---- norms: saved[0] = mean (layernorm), saved[1] = rstd.
void layernorm_bw(Tape& tape, const Node& n) {
  if (!tape.has_grad(n.out)) return;
  Tensor db = n.param[1] ? n.param[1]->grad : Tensor();
  ops::layernorm_backward(tape.backend(), tape.grad(n.out), tape.value(n.in[0]),
                          n.param[0]->compute, n.saved[0], n.saved[1], tape.grad(n.in[0]),
                          n.param[0]->grad, db);
}

void rmsnorm_bw(Tape& tape, const Node& n) {
  if (!tape.has_grad(n.out)) return;
  ops::rmsnorm_backward(tape.backend(), tape.grad(n.out), tape.value(n.in[0]), n.param[0]->compute,
                        n.saved[1], tape.grad(n.in[0]), n.param[0]->grad);
}

void gelu_bw(Tape& tape, const Node& n) {
  if (!tape.has_grad(n.out)) return;
  ops::gelu_backward(tape.backend(), tape.value(n.in[0]), tape.grad(n.out), tape.grad(n.in[0]));
}

void swiglu_bw(Tape& tape, const Node& n) {
  if (!tape.has_grad(n.out)) return;
  ops::swiglu_backward(tape.backend(), tape.value(n.in[0]), tape.value(n.in[1]), tape.grad(n.out),
                       tape.grad(n.in[0]), tape.grad(n.in[1]));
}

Node unary(BackwardFn bw, const Value& x, const Value& y) {
  Node n;
  n.backward = bw;
  n.in[0] = x.id;
  n.out = y.id;
  return n;
}

}  // namespace

Value embedding(Tape& tape, const Tensor& ids, Parameter& table) {
  std::vector<int64_t> d = ids.shape().dims();
  d.push_back(table.value.dim(1));
  Value y = tape.make(Shape(d), table.compute.dtype());
  ops::embedding_forward(tape.backend(), ids, table.compute, y.t);
  Node n;
  n.backward = &embedding_bw;
  n.out = y.id;
  n.saved[0] = ids;
  n.param[0] = &table;
  tape.record(n);
  return y;
}

Value add(Tape& tape, const Value& a, const Value& b) {
  Value y = tape.make(a.t.shape(), a.t.dtype());
  ops::add(tape.backend(), a.t, b.t, y.t);
  Node n;
  n.backward = &add_bw;
  n.in[0] = a.id;
  n.in[1] = b.id;
  n.out = y.id;
  tape.record(n);
  return y;
}

Value linear(Tape& tape, const Value& x, Parameter& w, Parameter* bias) {
  return linear_out(tape, x, w, bias, x.t.dtype());
}

Value linear_out(Tape& tape, const Value& x, Parameter& w, Parameter* bias, DType out_dtype) {
  Value y = tape.make(with_last(x.t.shape(), w.value.dim(0)), out_dtype);
  linear_fw(tape, x, w, bias, y, 0);
  return y;
}

void linear_into(Tape& tape, const Value& x, Parameter& w, const Value& y, int64_t col0) {
  linear_fw(tape, x, w, nullptr, y, col0);
}

Value layernorm(Tape& tape, const Value& x, Parameter& w, Parameter* bias, float eps) {
  Value y = tape.make(x.t.shape(), x.t.dtype());
  const int64_t rows = rows_of(x.t);
  Tensor mean = tape.scratch(Shape{rows}, DType::F32);
  Tensor rstd = tape.scratch(Shape{rows}, DType::F32);
  ops::layernorm_forward(tape.backend(), x.t, w.compute, bias ? bias->compute : Tensor(), y.t, mean,
                         rstd, eps);
  Node n = unary(&layernorm_bw, x, y);
  n.saved[0] = mean;
  n.saved[1] = rstd;
  n.param[0] = &w;
  n.param[1] = bias;
  tape.record(n);
  return y;
}

Value rmsnorm(Tape& tape, const Value& x, Parameter& w, float eps) {
  Value y = tape.make(x.t.shape(), x.t.dtype());
  Tensor rstd = tape.scratch(Shape{rows_of(x.t)}, DType::F32);
  ops::rmsnorm_forward(tape.backend(), x.t, w.compute, y.t, rstd, eps);
  Node n = unary(&rmsnorm_bw, x, y);
  n.saved[1] = rstd;
  n.param[0] = &w;
  tape.record(n);
  return y;
}

Value gelu(Tape& tape, const Value& x) {
  Value y = tape.make(x.t.shape(), x.t.dtype());
  ops::gelu_forward(tape.backend(), x.t, y.t);
  tape.record(unary(&gelu_bw, x, y));
  return y;
}

Value swiglu(Tape& tape, const Value& gate, const Value& up) {
  Value y = tape.make(gate.t.shape(), gate.t.dtype());
  ops::swiglu_forward(tape.backend(), gate.t, up.t, y.t);
  Node n = unary(&swiglu_bw, gate, y);
  n.in[1] = up.id;
  tape.record(n);
  return y;
}

}  // namespace keel::nn
