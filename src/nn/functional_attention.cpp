// Causal attention over a fused qkv buffer (with optional in-place RoPE) and
// the cross-entropy loss that seeds backward.
#include <cmath>

#include "backend/ops.h"
#include "core/error.h"
#include "nn/functional.h"

namespace keel::nn {

namespace {

struct AttnPlan {
  backend::AttentionArgs a;
  backend::RopeArgs r;
  int64_t row = 0;  // elements per token in qkv
  int64_t esize = 0;
};

AttnPlan plan(const AttentionShape& s, DType dt) {
  AttnPlan p;
  p.row = (s.NH + 2 * s.NKV) * s.HS;
  p.esize = int64_t(dtype_size(dt));
  backend::AttentionArgs& a = p.a;
  a.B = s.B;
  a.Tq = s.T;
  a.Tk = s.T;
  a.NH = s.NH;
  a.NKV = s.NKV;
  a.HS = s.HS;
  a.q_row_stride = p.row;
  a.q_batch_stride = s.T * p.row;
  a.kv_row_stride = p.row;
  a.kv_batch_stride = s.T * p.row;
  a.scale = float(1.0 / std::sqrt(double(s.HS)));
  a.dt = dt;
  // q and k heads sit side by side in each token row, so one rotation covers both.
  backend::RopeArgs& r = p.r;
  r.B = s.B;
  r.T = s.T;
  r.NH = s.NH + s.NKV;
  r.HS = s.HS;
  r.row_stride = p.row;
  r.batch_stride = s.T * p.row;
  r.pos0 = 0;
  r.theta = s.rope_theta;
  r.dt = dt;
  return p;
}

AttentionShape shape_of(const Node& n) {
  AttentionShape s;
  s.B = n.i[0];
  s.T = n.i[1];
  s.NH = n.i[2];
  s.NKV = n.i[3];
  s.HS = n.i[4];
  s.rope = n.i[5] != 0;
  s.rope_theta = n.f[0];
  return s;
}

char* at(const Tensor& t, int64_t elems, int64_t esize) {
  return static_cast<char*>(t.raw()) + elems * esize;
}

// saved[0] = lse; qkv (value in[0]) holds the rotated q and k after forward.
void attention_bw(Tape& tape, const Node& n) {
  if (!tape.has_grad(n.out)) return;
  backend::Backend& be = tape.backend();
  const AttentionShape s = shape_of(n);
  const Tensor& qkv = tape.value(n.in[0]);
  const AttnPlan p = plan(s, qkv.dtype());
  const Tensor& o = tape.value(n.out);
  const Tensor& dout = tape.grad(n.out);
  Tensor& dqkv = tape.grad(n.in[0]);
  const int64_t koff = s.NH * s.HS, voff = (s.NH + s.NKV) * s.HS;
  if (!s.rope) {
    be.attention_backward(p.a, dout.raw(), at(qkv, 0, p.esize), at(qkv, koff, p.esize),
                          at(qkv, voff, p.esize), o.raw(), n.saved[0].data<float>(),
                          at(dqkv, 0, p.esize), at(dqkv, koff, p.esize), at(dqkv, voff, p.esize));
    return;
  }
  // Gradients of the rotated q, k go to a temporary with qkv's layout, then
  // rotate back into dqkv; dv needs no rotation and goes straight in.
  Tensor tmp = tape.scratch_zeros(qkv.shape(), qkv.dtype());
  be.attention_backward(p.a, dout.raw(), at(qkv, 0, p.esize), at(qkv, koff, p.esize),
                        at(qkv, voff, p.esize), o.raw(), n.saved[0].data<float>(),
                        at(tmp, 0, p.esize), at(tmp, koff, p.esize), at(dqkv, voff, p.esize));
  be.rope_backward(p.r, tmp.raw(), dqkv.raw());
}

void cross_entropy_bw(Tape& tape, const Node& n) {
  const Tensor& logits = tape.value(n.in[0]);
  const int64_t V = logits.dim(-1), N = logits.numel() / V;
  Tensor dl = tape.grad(n.in[0]).reshape(Shape{N, V});
  ops::cross_entropy_backward(tape.backend(), logits.reshape(Shape{N, V}), n.saved[0], n.saved[1],
                              n.saved[2], dl);
}

}  // namespace

Value causal_attention(Tape& tape, const Value& qkv, const AttentionShape& s) {
  backend::Backend& be = tape.backend();
  const DType dt = qkv.t.dtype();
  const int64_t row = (s.NH + 2 * s.NKV) * s.HS;
  if (s.B <= 0 || s.T <= 0 || s.NH <= 0 || s.NKV <= 0 || s.HS <= 0 || s.NH % s.NKV != 0)
    fail<KernelError>(
        "[attention] bad shape B={} T={} NH={} NKV={} HS={} (NH must be a multiple "
        "of NKV)",
        s.B, s.T, s.NH, s.NKV, s.HS);
  if (qkv.t.numel() != s.B * s.T * row || qkv.t.dim(-1) != row || !qkv.t.is_contiguous())
    fail<KernelError>("[attention] qkv {} must be contiguous (B={}, T={}, (NH + 2*NKV)*HS={})",
                      qkv.t.desc(), s.B, s.T, row);
  if (!be.supports(backend::Kernel::Attention, dt) ||
      (s.rope && !be.supports(backend::Kernel::Rope, dt)))
    fail<KernelError>("[attention] backend {} does not support {}", be.name(), dtype_name(dt));
  if (s.rope && s.HS % 2 != 0) fail<KernelError>("[rope] head size {} must be even", s.HS);
  const AttnPlan p = plan(s, dt);
  if (s.rope) be.rope_forward(p.r, qkv.t.raw(), qkv.t.raw());
  Value o = tape.make(Shape{s.B, s.T, s.NH * s.HS}, dt);
  Tensor lse = tape.scratch(Shape{s.B, s.NH, s.T}, DType::F32);
  const int64_t koff = s.NH * s.HS, voff = (s.NH + s.NKV) * s.HS;
  be.attention_forward(p.a, at(qkv.t, 0, p.esize), at(qkv.t, koff, p.esize),
                       at(qkv.t, voff, p.esize), o.t.raw(), lse.data<float>());
  Node n;
  n.backward = &attention_bw;
  n.in[0] = qkv.id;
  n.out = o.id;
  n.saved[0] = lse;
  n.i[0] = s.B;
  n.i[1] = s.T;
  n.i[2] = s.NH;
  n.i[3] = s.NKV;
  n.i[4] = s.HS;
  n.i[5] = s.rope ? 1 : 0;
  n.f[0] = s.rope_theta;
  tape.record(n);
  return o;
}

float cross_entropy(Tape& tape, const Value& logits, const Tensor& targets, float grad_scale) {
  backend::Backend& be = tape.backend();
  const int64_t V = logits.t.dim(-1), N = logits.t.numel() / V;
  if (targets.dtype() != DType::I32 || targets.numel() != N)
    fail<KernelError>("[cross_entropy] targets {} must be i32 with one entry per row of logits {}",
                      targets.desc(), logits.t.desc());
  // targets arrive on the host: the count of scored rows and the loss
  // gradient are made there, and only the loss sum comes back from a device.
  if (!targets.on_host())
    fail<KernelError>("[cross_entropy] targets {} must be on the host", targets.desc());
  const Tensor tg_host = targets.reshape(Shape{N});
  const Tensor tg = tape.input(tg_host);
  Tensor losses = tape.scratch(Shape{N}, DType::F32);
  Tensor lse = tape.scratch(Shape{N}, DType::F32);
  ops::cross_entropy_forward(be, logits.t.reshape(Shape{N, V}), tg, losses, lse);
  const int32_t* t = tg_host.data<int32_t>();
  int64_t count = 0;
  for (int64_t i = 0; i < N; ++i) count += t[i] >= 0;
  Tensor sum = tape.scratch(Shape{1}, DType::F32);
  ops::reduce_forward(be, backend::ReduceOp::Sum, losses.reshape(Shape{1, N}), sum);
  float sum_host = 0;
  be.download(&sum_host, sum.raw(), sizeof(float));
  const float mean = count > 0 ? float(double(sum_host) / double(count)) : 0.f;
  if (tape.recording()) {
    Tensor dloss_host =
        be.host_memory() ? tape.scratch(Shape{N}, DType::F32) : Tensor::zeros(Shape{N}, DType::F32);
    float* d = dloss_host.data<float>();
    const float g = count > 0 ? float(double(grad_scale) / double(count)) : 0.f;
    for (int64_t i = 0; i < N; ++i) d[i] = t[i] >= 0 ? g : 0.f;
    const Tensor dloss = tape.input(dloss_host);
    Node n;
    n.backward = &cross_entropy_bw;
    n.in[0] = logits.id;
    n.saved[0] = tg;
    n.saved[1] = lse;
    n.saved[2] = dloss;
    tape.record(n);
  }
  return mean;
}

}  // namespace keel::nn
