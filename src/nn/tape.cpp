// Tape bookkeeping: values and their lazily created gradients, node replay,
// and recomputed segments (activation checkpointing).
#include "nn/tape.h"

#include "backend/device_tensor.h"
#include "backend/ops.h"
#include "core/error.h"

namespace keel::nn {

Tape::Tape(backend::Backend& be, DType act_dtype)
    : be_(be),
      dtype_(act_dtype),
      main_(size_t(32) << 20, backend::arena_memory(be)),
      scratch_arena_(size_t(16) << 20, backend::arena_memory(be)) {
  if (act_dtype != DType::F32 && act_dtype != DType::BF16)
    fail<ConfigError>("compute dtype must be f32 or bf16, got {}", dtype_name(act_dtype));
}

void Tape::begin(bool record) {
  recording_ = record;
  segment_forward_ = false;
  values_.clear();
  grads_.clear();
  value_arena_.clear();
  nodes_.clear();
  segment_params_.clear();
  main_.reset();
  scratch_arena_.reset();
  cur_ = &main_;
}

Value Tape::register_value(const Tensor& t, Arena* a) {
  Value v;
  v.t = t;
  v.id = int32_t(values_.size());
  values_.push_back(t);
  grads_.emplace_back();
  value_arena_.push_back(a);
  return v;
}

Value Tape::make(const Shape& shape, DType dtype) {
  return register_value(Tensor::in_arena(*cur_, shape, dtype), cur_);
}

Tensor Tape::scratch(const Shape& shape, DType dtype) {
  return Tensor::in_arena(*cur_, shape, dtype);
}

Tensor Tape::scratch_zeros(const Shape& shape, DType dtype) {
  Tensor t = Tensor::in_arena(*cur_, shape, dtype);
  backend::zero(be_, t);
  return t;
}

Tensor Tape::input(const Tensor& host) {
  if (be_.host_memory()) return host;
  Tensor t = Tensor::in_arena(*cur_, host.shape(), host.dtype());
  backend::copy_from_host(be_, host, t);
  return t;
}

Tensor& Tape::grad(int32_t id) {
  Tensor& g = grads_[size_t(id)];
  if (!g.defined()) {
    const Tensor& v = values_[size_t(id)];
    g = Tensor::in_arena(*value_arena_[size_t(id)], v.shape(), v.dtype());
    backend::zero(be_, g);
  }
  return g;
}

Tensor& Tape::grad_for_write(int32_t id, bool* fresh) {
  Tensor& g = grads_[size_t(id)];
  *fresh = !g.defined();
  if (*fresh) {
    const Tensor& v = values_[size_t(id)];
    g = Tensor::in_arena(*value_arena_[size_t(id)], v.shape(), v.dtype());
  }
  return g;
}

void Tape::record(const Node& n) {
  if (recording_) {
    nodes_.push_back(n);
  } else if (segment_forward_) {
    for (Parameter* p : n.param)
      if (p) segment_params_.push_back(p);
  }
}

template <class F>
void Tape::for_each_param(const Node& n, F&& f) const {
  if (n.backward == &Tape::checkpoint_backward) {
    for (int64_t j = n.i[1]; j < n.i[2]; ++j) f(segment_params_[size_t(j)]);
    return;
  }
  for (Parameter* p : n.param)
    if (p) f(p);
}

void Tape::run_backward(const Node& n) {
  // A recomputed segment clears its parameters' gradients node by node as it replays.
  if (n.backward != &Tape::checkpoint_backward)
    for (int j = 0; j < 2; ++j) {
      Parameter* p = n.param[j];
      if (p && p->grad_stale && !(j == 0 && n.overwrites_param0_grad)) {
        backend::zero(be_, p->grad);
        p->grad_stale = false;
      }
    }
  n.backward(*this, n);
}

void Tape::backward() {
  if (!recording_) fail("backward() on a tape that did not record (forward-only step)");
  GradListener* l = listener_;
  if (l) {
    // A parameter's gradient is final once the last node naming it has run
    // (a tied weight is named by two nodes).
    pending_.clear();
    for (const Node& n : nodes_) for_each_param(n, [&](Parameter* p) { ++pending_[p]; });
  }
  // By index: a recomputed segment appends (and then drops) nodes while we iterate.
  for (size_t k = nodes_.size(); k-- > 0;) {
    run_backward(nodes_[k]);
    if (l)
      for_each_param(nodes_[k], [&](Parameter* p) {
        if (--pending_[p] == 0) l->on_grad_ready(*p);
      });
  }
  if (l) l->on_backward_end();
}

Value Tape::checkpoint(SegmentFn fn, void* ctx, int64_t index, const Value& x) {
  if (!recording_) return fn(*this, ctx, index, x);
  // Forward without recording, inside the recompute arena, which the next
  // segment reuses: only x and the copied output stay alive.
  const size_t vmark = values_.size();
  const size_t pmark = segment_params_.size();
  recording_ = false;
  segment_forward_ = true;
  Arena* prev = cur_;
  cur_ = &scratch_arena_;
  scratch_arena_.reset();
  Value y = fn(*this, ctx, index, x);
  cur_ = prev;
  segment_forward_ = false;
  recording_ = true;
  Tensor out = Tensor::in_arena(*cur_, y.t.shape(), y.t.dtype());
  ops::cast(be_, y.t, out);
  values_.resize(vmark);
  grads_.resize(vmark);
  value_arena_.resize(vmark);
  Value o = register_value(out, cur_);
  Node n;
  n.backward = &Tape::checkpoint_backward;
  n.in[0] = x.id;
  n.out = o.id;
  n.ctx = ctx;
  n.segment = fn;
  n.i[0] = index;
  n.i[1] = int64_t(pmark);
  n.i[2] = int64_t(segment_params_.size());
  record(n);
  return o;
}

void Tape::checkpoint_backward(Tape& tape, const Node& node) {
  // Copy what we need: recording below may reallocate the node vector.
  const int32_t xid = node.in[0], oid = node.out;
  void* ctx = node.ctx;
  const SegmentFn fn = node.segment;
  const int64_t index = node.i[0];
  if (!tape.has_grad(oid)) return;
  const size_t vmark = tape.values_.size(), nmark = tape.nodes_.size();
  Arena* prev = tape.cur_;
  tape.scratch_arena_.reset();
  tape.cur_ = &tape.scratch_arena_;
  Value x;
  x.t = tape.values_[size_t(xid)];
  x.id = xid;
  Value y = fn(tape, ctx, index, x);
  tape.cur_ = prev;
  tape.alias_grad(y.id, tape.grad(oid));
  for (size_t k = tape.nodes_.size(); k-- > nmark;) tape.run_backward(tape.nodes_[k]);
  tape.nodes_.resize(nmark);
  tape.values_.resize(vmark);
  tape.grads_.resize(vmark);
  tape.value_arena_.resize(vmark);
}

}  // namespace keel::nn
