// Forward and backward of the MLA assembly ops (see functional_mla.h). They
// only move elements (plus the backend's rotary kernel), in the activation
// dtype; gradients that several heads share are summed in f32, rounded once.
#include "nn/functional_mla.h"

#include <cstring>

#include "core/error.h"

namespace keel::nn {

namespace {

template <class F>
void visit(DType dt, F&& f) {
  if (dt == DType::F32) return f(float{});
  if (dt == DType::BF16) return f(bf16_t{});
  fail<KernelError>("[mla] dtype {} not supported", dtype_name(dt));
}

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
  const Tensor& dy = tape.grad(n.out);
  Tensor& dx = tape.grad(n.in[0]);
  const int64_t C = x.dim(-1), c0 = n.i[0], w = n.i[1] - n.i[0], rows = x.numel() / C;
  const size_t es = dtype_size(x.dtype());
  backend::Backend& be = tape.backend();
  for (int64_t r = 0; r < rows; ++r)
    be.accumulate(x.dtype(), static_cast<const char*>(dy.raw()) + size_t(r * w) * es,
                  static_cast<char*>(dx.raw()) + size_t(r * C + c0) * es, w, 1.f);
}

// in[0] = q, in[1] = kv, in[2] = kpe; out = qkv (rotated).
void qkv_bw(Tape& tape, const Node& n) {
  if (!tape.has_grad(n.out)) return;
  const MlaShape s = shape_of(n);
  const Tensor& qkv = tape.value(n.out);
  const DType dt = qkv.dtype();
  const int64_t D = s.D(), row = 3 * s.NH * D, N = s.B * s.T;
  const Tensor& g = tape.grad(n.out);
  // Un-rotate the gradients of every rope slice (q heads, then k heads) into tmp.
  Tensor tmp = tape.scratch_zeros(qkv.shape(), dt);
  const size_t es = dtype_size(dt);
  const backend::RopeArgs r = rope_args(s, row, dt);
  for (int64_t h = 0; h < 2 * s.NH; ++h) {
    const size_t off = size_t(h * D + s.nope) * es;
    tape.backend().rope_backward(r, static_cast<const char*>(g.raw()) + off,
                                 static_cast<char*>(tmp.raw()) + off);
  }
  Tensor& dq = tape.grad(n.in[0]);
  Tensor& dkv = tape.grad(n.in[1]);
  Tensor& dkpe = tape.grad(n.in[2]);
  visit(dt, [&](auto tag) {
    using T = decltype(tag);
    const T* gp = g.data<T>();
    const T* tp = tmp.data<T>();
    T* q = dq.data<T>();
    T* kv = dkv.data<T>();
    T* kpe = dkpe.data<T>();
    const int64_t kvw = s.nope + s.v;
    for (int64_t t = 0; t < N; ++t) {
      const T* gr = gp + t * row;
      const T* tr = tp + t * row;
      for (int64_t h = 0; h < s.NH; ++h) {
        T* qh = q + t * s.NH * D + h * D;
        const T* gq = gr + h * D;
        const T* tq = tr + h * D;
        for (int64_t j = 0; j < s.nope; ++j) qh[j] = from_f32<T>(to_f32(qh[j]) + to_f32(gq[j]));
        for (int64_t j = s.nope; j < D; ++j) qh[j] = from_f32<T>(to_f32(qh[j]) + to_f32(tq[j]));
        T* kvh = kv + t * s.NH * kvw + h * kvw;
        const T* gk = gr + (s.NH + h) * D;
        const T* gv = gr + (2 * s.NH + h) * D;
        for (int64_t j = 0; j < s.nope; ++j) kvh[j] = from_f32<T>(to_f32(kvh[j]) + to_f32(gk[j]));
        for (int64_t j = 0; j < s.v; ++j)
          kvh[s.nope + j] = from_f32<T>(to_f32(kvh[s.nope + j]) + to_f32(gv[j]));
      }
      for (int64_t j = 0; j < s.rope; ++j) {
        float acc = to_f32(kpe[t * s.rope + j]);
        for (int64_t h = 0; h < s.NH; ++h) acc += to_f32(tr[(s.NH + h) * D + s.nope + j]);
        kpe[t * s.rope + j] = from_f32<T>(acc);
      }
    }
  });
}

void heads_out_bw(Tape& tape, const Node& n) {
  if (!tape.has_grad(n.out)) return;
  const MlaShape s = shape_of(n);
  const Tensor& dy = tape.grad(n.out);
  Tensor& dx = tape.grad(n.in[0]);
  const int64_t D = s.D(), N = s.B * s.T;
  const size_t es = dtype_size(dy.dtype());
  for (int64_t t = 0; t < N; ++t)
    for (int64_t h = 0; h < s.NH; ++h)
      tape.backend().accumulate(
          dy.dtype(), static_cast<const char*>(dy.raw()) + size_t((t * s.NH + h) * s.v) * es,
          static_cast<char*>(dx.raw()) + size_t((t * s.NH + h) * D) * es, s.v, 1.f);
}

}  // namespace

Value slice_cols(Tape& tape, const Value& x, int64_t c0, int64_t c1) {
  const int64_t C = x.t.dim(-1);
  if (c0 < 0 || c1 > C || c0 >= c1 || !x.t.is_contiguous())
    fail<KernelError>("[slice_cols] columns [{}, {}) of {}", c0, c1, x.t.desc());
  std::vector<int64_t> dims = x.t.shape().dims();
  dims.back() = c1 - c0;
  Value y = tape.make(Shape(dims), x.t.dtype());
  const int64_t rows = x.t.numel() / C, w = c1 - c0;
  const size_t es = dtype_size(x.t.dtype());
  for (int64_t r = 0; r < rows; ++r)
    std::memcpy(static_cast<char*>(y.t.raw()) + size_t(r * w) * es,
                static_cast<const char*>(x.t.raw()) + size_t(r * C + c0) * es, size_t(w) * es);
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
  Value out = tape.make(Shape{s.B, s.T, row}, dt);
  const size_t es = dtype_size(dt);
  char* o = static_cast<char*>(out.t.raw());
  const char* qp = static_cast<const char*>(q.t.raw());
  const char* kvp = static_cast<const char*>(kv.t.raw());
  const char* kp = static_cast<const char*>(kpe.t.raw());
  std::memset(o, 0, size_t(N * row) * es);
  for (int64_t t = 0; t < N; ++t) {
    char* r = o + size_t(t * row) * es;
    std::memcpy(r, qp + size_t(t * s.NH * D) * es, size_t(s.NH * D) * es);
    for (int64_t h = 0; h < s.NH; ++h) {
      const char* kvh = kvp + size_t(t * s.NH * kvw + h * kvw) * es;
      std::memcpy(r + size_t((s.NH + h) * D) * es, kvh, size_t(s.nope) * es);
      std::memcpy(r + size_t((s.NH + h) * D + s.nope) * es, kp + size_t(t * s.rope) * es,
                  size_t(s.rope) * es);
      std::memcpy(r + size_t((2 * s.NH + h) * D) * es, kvh + size_t(s.nope) * es, size_t(s.v) * es);
    }
  }
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
  Value y = tape.make(Shape{s.B, s.T, s.NH * s.v}, o.t.dtype());
  const size_t es = dtype_size(o.t.dtype());
  for (int64_t t = 0; t < N; ++t)
    for (int64_t h = 0; h < s.NH; ++h)
      std::memcpy(static_cast<char*>(y.t.raw()) + size_t((t * s.NH + h) * s.v) * es,
                  static_cast<const char*>(o.t.raw()) + size_t((t * s.NH + h) * D) * es,
                  size_t(s.v) * es);
  Node n;
  n.backward = &heads_out_bw;
  n.in[0] = o.id;
  n.out = y.id;
  record_shape(n, s);
  tape.record(n);
  return y;
}

}  // namespace keel::nn
