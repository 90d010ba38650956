// Forward and backward of the MLA assembly ops (see functional_mla.h): the
// backend's layout kernels (copy_rows, mla_qkv_*) and its rotary kernel, in
// the activation dtype, so they run wherever the activations live.
#include "nn/functional_mla.h"

#include "core/error.h"

namespace keel::nn {

namespace {

MlaShape shape_of(const Node& n) {
  MlaShape s;
  s.B = n.i[0];
  s.T = n.i[1];
  s.NH = n.i[2];
  s.nope = n.i[3];
  s.rope = n.i[4];
  s.v = n.i[5];
  s.rope_theta = n.f[0];
  return s;
}

void record_shape(Node& n, const MlaShape& s) {
  n.i[0] = s.B;
  n.i[1] = s.T;
  n.i[2] = s.NH;
  n.i[3] = s.nope;
  n.i[4] = s.rope;
  n.i[5] = s.v;
  n.f[0] = s.rope_theta;
}

// Rotary args for one rope slice of width s.rope in rows of `row` elements.
backend::RopeArgs rope_args(const MlaShape& s, int64_t row, DType dt) {
  backend::RopeArgs r;
  r.B = s.B;
  r.T = s.T;
  r.NH = 1;
  r.HS = s.rope;
  r.row_stride = row;
  r.batch_stride = s.T * row;
  r.theta = s.rope_theta;
  r.dt = dt;
  return r;
}

// i[0] = c0, i[1] = c1
void slice_bw(Tape& tape, const Node& n) {
  if (!tape.has_grad(n.out)) return;
  const Tensor& x = tape.value(n.in[0]);
  const int64_t C = x.dim(-1), c0 = n.i[0], w = n.i[1] - n.i[0], rows = x.numel() / C;
  const size_t es = dtype_size(x.dtype());
  tape.backend().copy_rows(x.dtype(), tape.grad(n.out).raw(), w,
                           static_cast<char*>(tape.grad(n.in[0]).raw()) + size_t(c0) * es, C, rows,
                           w, true);
}

backend::MlaArgs mla_args(const MlaShape& s, DType dt) {
  backend::MlaArgs a;
  a.N = s.B * s.T;
  a.NH = s.NH;
  a.nope = s.nope;
  a.rope = s.rope;
  a.v = s.v;
  a.dt = dt;
  return a;
}

// in[0] = q, in[1] = kv, in[2] = kpe; out = qkv (rotated).
void qkv_bw(Tape& tape, const Node& n) {
  if (!tape.has_grad(n.out)) return;
  const MlaShape s = shape_of(n);
  const Tensor& qkv = tape.value(n.out);
  const DType dt = qkv.dtype();
  const int64_t D = s.D(), row = 3 * s.NH * D;
  const Tensor& g = tape.grad(n.out);
  // Un-rotate the gradients of every rope slice (q heads, then k heads) into tmp.
  Tensor tmp = tape.scratch_zeros(qkv.shape(), dt);
  const size_t es = dtype_size(dt);
  const backend::RopeArgs r = rope_args(s, row, dt);
  backend::Backend& be = tape.backend();
  for (int64_t h = 0; h < 2 * s.NH; ++h) {
    const size_t off = size_t(h * D + s.nope) * es;
    be.rope_backward(r, static_cast<const char*>(g.raw()) + off,
                     static_cast<char*>(tmp.raw()) + off);
  }
  be.mla_qkv_backward(mla_args(s, dt), g.raw(), tmp.raw(), tape.grad(n.in[0]).raw(),
                      tape.grad(n.in[1]).raw(), tape.grad(n.in[2]).raw());
}

void heads_out_bw(Tape& tape, const Node& n) {
  if (!tape.has_grad(n.out)) return;
  const MlaShape s = shape_of(n);
  const Tensor& dy = tape.grad(n.out);
  tape.backend().copy_rows(dy.dtype(), dy.raw(), s.v, tape.grad(n.in[0]).raw(), s.D(),
                           s.B * s.T * s.NH, s.v, true);
}

void check_layout(const backend::Backend& be, backend::Kernel k, DType dt, const char* what) {
  if (!be.supports(k, dt))
    fail<KernelError>("[{}] backend {} does not support {}", what, be.name(), dtype_name(dt));
}

}  // namespace

Value slice_cols(Tape& tape, const Value& x, int64_t c0, int64_t c1) {
  const int64_t C = x.t.dim(-1);
  if (c0 < 0 || c1 > C || c0 >= c1 || !x.t.is_contiguous())
    fail<KernelError>("[slice_cols] columns [{}, {}) of {}", c0, c1, x.t.desc());
  std::vector<int64_t> dims = x.t.shape().dims();
  dims.back() = c1 - c0;
  check_layout(tape.backend(), backend::Kernel::CopyRows, x.t.dtype(), "slice_cols");
  Value y = tape.make(Shape(dims), x.t.dtype());
  const int64_t rows = x.t.numel() / C, w = c1 - c0;
  const size_t es = dtype_size(x.t.dtype());
  tape.backend().copy_rows(x.t.dtype(), static_cast<const char*>(x.t.raw()) + size_t(c0) * es, C,
                           y.t.raw(), w, rows, w, false);
  Node n;
  n.backward = &slice_bw;
  n.in[0] = x.id;
  n.out = y.id;
  n.i[0] = c0;
  n.i[1] = c1;
  tape.record(n);
  return y;
}

Value mla_qkv(Tape& tape, const Value& q, const Value& kv, const Value& kpe, const MlaShape& s) {
  const int64_t D = s.D(), N = s.B * s.T, row = 3 * s.NH * D, kvw = s.nope + s.v;
  const DType dt = q.t.dtype();
  if (s.rope % 2 != 0 || s.rope <= 0 || s.v > D || q.t.numel() != N * s.NH * D ||
      kv.t.numel() != N * s.NH * kvw || kpe.t.numel() != N * s.rope || kv.t.dtype() != dt ||
      kpe.t.dtype() != dt)
    fail<KernelError>(
        "[mla_qkv] q {}, kv {}, kpe {} do not match B={} T={} NH={} nope={} rope={} v={}",
        q.t.desc(), kv.t.desc(), kpe.t.desc(), s.B, s.T, s.NH, s.nope, s.rope, s.v);
  check_layout(tape.backend(), backend::Kernel::MlaQkv, dt, "mla_qkv");
  Value out = tape.make(Shape{s.B, s.T, row}, dt);
  const size_t es = dtype_size(dt);
  char* o = static_cast<char*>(out.t.raw());
  tape.backend().mla_qkv_forward(mla_args(s, dt), q.t.raw(), kv.t.raw(), kpe.t.raw(), o);
  const backend::RopeArgs ra = rope_args(s, row, dt);
  for (int64_t h = 0; h < 2 * s.NH; ++h) {
    char* p = o + size_t(h * D + s.nope) * es;
    tape.backend().rope_forward(ra, p, p);
  }
  Node n;
  n.backward = &qkv_bw;
  n.in[0] = q.id;
  n.in[1] = kv.id;
  n.in[2] = kpe.id;
  n.out = out.id;
  record_shape(n, s);
  tape.record(n);
  return out;
}

Value mla_heads_out(Tape& tape, const Value& o, const MlaShape& s) {
  const int64_t D = s.D(), N = s.B * s.T;
  if (o.t.numel() != N * s.NH * D)
    fail<KernelError>("[mla_heads_out] o {} must be ({}, {}, {})", o.t.desc(), s.B, s.T, s.NH * D);
  check_layout(tape.backend(), backend::Kernel::CopyRows, o.t.dtype(), "mla_heads_out");
  Value y = tape.make(Shape{s.B, s.T, s.NH * s.v}, o.t.dtype());
  tape.backend().copy_rows(o.t.dtype(), o.t.raw(), D, y.t.raw(), s.v, N * s.NH, s.v, false);
  Node n;
  n.backward = &heads_out_bw;
  n.in[0] = o.id;
  n.out = y.id;
  record_shape(n, s);
  tape.record(n);
  return y;
}

}  // namespace keel::nn
