// Forward and backward of the mixture-of-experts ops (see functional_moe.h).
#include "nn/functional_moe.h"

#include <cstring>

#include "core/error.h"

namespace keel::nn {

namespace {

void check_float(const backend::Backend& be, backend::Kernel k, DType dt, const char* what) {
  if (!be.supports(k, dt))
    fail<KernelError>("[{}] backend {} does not support {}", what, be.name(), dtype_name(dt));
}

// saved[0] = scores, saved[1] = idx, saved[2] = aux dscores (may be undefined);
// i[0..2] = N, E, K; i[3] = gating; i[4] = norm_topk; f[0] = scale.
backend::MoeRouteArgs route_args(const Node& n) {
  backend::MoeRouteArgs a;
  a.N = n.i[0];
  a.E = n.i[1];
  a.K = n.i[2];
  a.gating = backend::MoeGating(n.i[3]);
  a.norm_topk = n.i[4] != 0;
  a.scale = n.f[0];
  return a;
}

void route_bw(Tape& tape, const Node& n) {
  const backend::MoeRouteArgs a = route_args(n);
  const bool aux = n.saved[2].defined();
  if (!tape.has_grad(n.out) && !aux) return;
  const Tensor dw =
      tape.has_grad(n.out) ? tape.grad(n.out) : tape.scratch_zeros(Shape{a.N, a.K}, DType::F32);
  tape.backend().moe_route_backward(a, n.saved[0].data<float>(), n.saved[1].data<int32_t>(),
                                    dw.data<float>(), aux ? n.saved[2].data<float>() : nullptr,
                                    tape.grad(n.in[0]).data<float>());
}

// saved[0] = pos; i[0..2] = N, K, C.
void permute_bw(Tape& tape, const Node& n) {
  if (!tape.has_grad(n.out)) return;
  const Tensor& x = tape.value(n.in[0]);
  tape.backend().moe_permute_backward(x.dtype(), n.saved[0].data<int32_t>(), tape.grad(n.out).raw(),
                                      tape.grad(n.in[0]).raw(), n.i[0], n.i[1], n.i[2]);
}

void unpermute_bw(Tape& tape, const Node& n) {
  if (!tape.has_grad(n.out)) return;
  const Tensor& yp = tape.value(n.in[0]);
  const Tensor& w = tape.value(n.in[1]);
  tape.backend().moe_unpermute_backward(yp.dtype(), n.saved[0].data<int32_t>(), w.data<float>(),
                                        yp.raw(), tape.grad(n.out).raw(), tape.grad(n.in[0]).raw(),
                                        tape.grad(n.in[1]).data<float>(), n.i[0], n.i[1], n.i[2]);
}

// saved[0] = offsets; i[0..2] = G, N, K.
void grouped_bw(Tape& tape, const Node& n) {
  if (!tape.has_grad(n.out)) return;
  backend::GroupedMatmulArgs a;
  a.G = n.i[0];
  a.N = n.i[1];
  a.K = n.i[2];
  a.offsets = static_cast<const int64_t*>(n.saved[0].raw());
  const Tensor& x = tape.value(n.in[0]);
  a.dt = x.dtype();
  Parameter& w = *n.param[0];
  tape.backend().grouped_matmul_backward(a, tape.grad(n.out).raw(), x.raw(), w.compute.raw(),
                                         tape.grad(n.in[0]).raw(), w.grad.data<float>());
}

}  // namespace

namespace {

void check_route(backend::Backend& be, const Value& logits, const Tensor& bias,
                 const backend::MoeRouteArgs& a) {
  check_float(be, backend::Kernel::MoeRoute, DType::F32, "moe_route");
  if (logits.t.dtype() != DType::F32 || logits.t.numel() != a.N * a.E || !logits.t.is_contiguous())
    fail<KernelError>("[moe_route] logits {} must be contiguous f32 ({}, {})", logits.t.desc(), a.N,
                      a.E);
  if (a.K < 1 || a.K > a.E)
    fail<KernelError>("[moe_route] top-k {} must be in [1, {}] (experts)", a.K, a.E);
  if (bias.defined() && (bias.dtype() != DType::F32 || bias.numel() != a.E))
    fail<KernelError>("[moe_route] bias {} must be f32 ({})", bias.desc(), a.E);
}

}  // namespace

Tensor moe_route_choice(Tape& tape, const Value& logits, const Tensor& bias,
                        const backend::MoeRouteArgs& a) {
  backend::Backend& be = tape.backend();
  check_route(be, logits, bias, a);
  Tensor scores = tape.scratch(Shape{a.N, a.E}, DType::F32);
  Tensor idx = tape.scratch(Shape{a.N, a.K}, DType::I32);
  Tensor w = tape.scratch(Shape{a.N, a.K}, DType::F32);
  be.moe_route_forward(a, logits.t.data<float>(), bias.defined() ? bias.data<float>() : nullptr,
                       scores.data<float>(), idx.data<int32_t>(), w.data<float>());
  return idx;
}

Value moe_route(Tape& tape, const Value& logits, const Tensor& bias, const backend::MoeRouteArgs& a,
                const Tensor& aux_dscores, MoeDispatch& d) {
  backend::Backend& be = tape.backend();
  check_route(be, logits, bias, a);
  d.scores = tape.scratch(Shape{a.N, a.E}, DType::F32);
  d.idx = tape.scratch(Shape{a.N, a.K}, DType::I32);
  Value w = tape.make(Shape{a.N, a.K}, DType::F32);
  be.moe_route_forward(a, logits.t.data<float>(), bias.defined() ? bias.data<float>() : nullptr,
                       d.scores.data<float>(), d.idx.data<int32_t>(), w.t.data<float>());
  Node n;
  n.backward = &route_bw;
  n.in[0] = logits.id;
  n.out = w.id;
  n.saved[0] = d.scores;
  n.saved[1] = d.idx;
  n.saved[2] = aux_dscores;
  n.i[0] = a.N;
  n.i[1] = a.E;
  n.i[2] = a.K;
  n.i[3] = int64_t(a.gating);
  n.i[4] = a.norm_topk ? 1 : 0;
  n.f[0] = a.scale;
  tape.record(n);
  return w;
}

void moe_plan(Tape& tape, int64_t E, int64_t capacity, MoeDispatch& d) {
  const int64_t N = d.idx.dim(0), K = d.idx.dim(1);
  backend::Backend& be = tape.backend();
  d.pos = tape.scratch(Shape{N, K}, DType::I32);
  d.offsets = tape.scratch(Shape{2 * (E + 1)}, DType::I32);
  be.moe_plan(d.idx.data<int32_t>(), N, K, E, capacity, d.pos.data<int32_t>(),
              static_cast<int64_t*>(d.offsets.raw()));
  // A device keeps the count where it is (reading it would wait on the
  // queue): its permuted buffers get a row per slot, and the rows past the
  // kept ones are never read.
  d.rows = be.host_memory() ? d.offs()[E] : N * K;
}

Value moe_permute(Tape& tape, const Value& x, const MoeDispatch& d) {
  const DType dt = x.t.dtype();
  check_float(tape.backend(), backend::Kernel::MoePermute, dt, "moe_permute");
  const int64_t N = d.pos.dim(0), K = d.pos.dim(1), C = x.t.dim(-1);
  if (x.t.numel() != N * C || !x.t.is_contiguous())
    fail<KernelError>("[moe_permute] x {} must be contiguous ({}, C)", x.t.desc(), N);
  Value xp = tape.make(Shape{d.rows, C}, dt);
  tape.backend().moe_permute_forward(dt, d.pos.data<int32_t>(), x.t.raw(), xp.t.raw(), N, K, C);
  Node n;
  n.backward = &permute_bw;
  n.in[0] = x.id;
  n.out = xp.id;
  n.saved[0] = d.pos;
  n.i[0] = N;
  n.i[1] = K;
  n.i[2] = C;
  tape.record(n);
  return xp;
}

Value moe_unpermute(Tape& tape, const Value& yp, const Value& w, const MoeDispatch& d,
                    const Shape& out_shape) {
  const DType dt = yp.t.dtype();
  check_float(tape.backend(), backend::Kernel::MoePermute, dt, "moe_unpermute");
  const int64_t N = d.pos.dim(0), K = d.pos.dim(1), C = yp.t.dim(-1);
  if (yp.t.dim(0) != d.rows || w.t.dtype() != DType::F32 || w.t.numel() != N * K ||
      out_shape.numel() != N * C)
    fail<KernelError>("[moe_unpermute] yp {} / w {} do not match {} rows, ({}, {}) weights",
                      yp.t.desc(), w.t.desc(), d.rows, N, K);
  Value y = tape.make(out_shape, dt);
  tape.backend().moe_unpermute_forward(dt, d.pos.data<int32_t>(), w.t.data<float>(), yp.t.raw(),
                                       y.t.raw(), N, K, C);
  Node n;
  n.backward = &unpermute_bw;
  n.in[0] = yp.id;
  n.in[1] = w.id;
  n.out = y.id;
  n.saved[0] = d.pos;
  n.i[0] = N;
  n.i[1] = K;
  n.i[2] = C;
  tape.record(n);
  return y;
}

Value grouped_linear(Tape& tape, const Value& x, Parameter& w, const MoeDispatch& d) {
  const DType dt = x.t.dtype();
  check_float(tape.backend(), backend::Kernel::GroupedMatmul, dt, "grouped_matmul");
  backend::GroupedMatmulArgs a;
  a.G = w.value.dim(0);
  a.N = w.value.dim(1);
  a.K = w.value.dim(2);
  a.offsets = d.offs();
  a.dt = dt;
  if (x.t.rank() != 2 || x.t.dim(0) != d.rows || x.t.dim(1) != a.K || w.compute.dtype() != dt ||
      d.offsets.numel() != 2 * (a.G + 1))
    fail<KernelError>("[grouped_matmul {}] x {} does not match weight {} over {} rows", w.name,
                      x.t.desc(), w.compute.desc(), d.rows);
  Value y = tape.make(Shape{d.rows, a.N}, dt);
  tape.backend().grouped_matmul_forward(a, x.t.raw(), w.compute.raw(), y.t.raw());
  Node n;
  n.backward = &grouped_bw;
  n.in[0] = x.id;
  n.out = y.id;
  n.param[0] = &w;
  n.saved[0] = d.offsets;
  n.i[0] = a.G;
  n.i[1] = a.N;
  n.i[2] = a.K;
  tape.record(n);
  return y;
}

}  // namespace keel::nn
