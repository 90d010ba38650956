// Tape: reverse-mode autograd for one step. Each differentiable op records a
// Node (a backward function pointer plus the tensors it needs); backward()
// replays the nodes in reverse and accumulates gradients. Activations and their
// gradients live in arenas that are reset at the start of every step.
#pragma once
#include <cstdint>
#include <unordered_map>
#include <vector>

#include "backend/backend.h"
#include "core/arena.h"
#include "core/tensor.h"
#include "nn/parameter.h"

namespace keel::nn {

class Tape;

// An activation recorded on the tape: its tensor and the id of its gradient slot.
struct Value {
  Tensor t;
  int32_t id = -1;
  bool defined() const { return id >= 0; }
};

struct Node;

// Told, during backward(), when a Parameter's gradient is final: every node
// that names it in Node::param (or, for a recomputed segment, every node of
// the segment that names it) has run. Data parallelism starts reducing a
// gradient bucket from here while the rest of backward still runs. A node
// that accumulates into a Parameter's grad must name it in Node::param.
class GradListener {
 public:
  virtual ~GradListener() = default;
  // p.grad has received its last contribution of this backward pass.
  virtual void on_grad_ready(Parameter& p) = 0;
  // backward() has finished (parameters no node named were never reported).
  virtual void on_backward_end() = 0;
};

using BackwardFn = void (*)(Tape& tape, const Node& node);
// A recomputable segment (one transformer block): y = fn(tape, ctx, index, x).
using SegmentFn = Value (*)(Tape& tape, void* ctx, int64_t index, const Value& x);

// One recorded op. Fixed-size so recording never allocates beyond the node
// vector, whose capacity is kept from step to step.
struct Node {
  BackwardFn backward = nullptr;
  int32_t in[3] = {-1, -1, -1};  // value ids of the inputs that need gradients
  int32_t out = -1;              // value id of the output
  Tensor saved[3];               // what backward needs beyond in/out (stats, ids)
  Parameter* param[2] = {nullptr, nullptr};
  // backward writes param[0]'s gradient whole when it is stale (grad_stale),
  // so the tape need not clear it first.
  bool overwrites_param0_grad = false;
  int64_t i[8] = {};
  float f[2] = {};
  void* ctx = nullptr;
  SegmentFn segment = nullptr;
};

class Tape {
 public:
  // act_dtype: dtype of activations and their gradients (F32 or BF16).
  Tape(backend::Backend& be, DType act_dtype);
  Tape(const Tape&) = delete;
  Tape& operator=(const Tape&) = delete;

  backend::Backend& backend() const { return be_; }
  DType dtype() const { return dtype_; }

  // Starts a step: forgets every value, node and gradient and resets the arenas.
  // With record=false ops run forward only (evaluation).
  void begin(bool record);
  bool recording() const { return recording_; }

  // A new uninitialised activation in the current arena.
  Value make(const Shape& shape, DType dtype);
  Value make(const Shape& shape) { return make(shape, dtype_); }
  // Uninitialised temporary in the current arena (not a value; no gradient).
  Tensor scratch(const Shape& shape, DType dtype);
  Tensor scratch_zeros(const Shape& shape, DType dtype);
  // Host tensor host where the backend's kernels can read it: itself for a
  // host-memory backend, else an upload into the current arena.
  Tensor input(const Tensor& host);

  const Tensor& value(int32_t id) const { return values_[size_t(id)]; }
  // The gradient of a value, zero-filled in the value's arena on first use.
  Tensor& grad(int32_t id);
  bool has_grad(int32_t id) const { return grads_[size_t(id)].defined(); }
  // The gradient for an op that can overwrite instead of accumulate (a matmul
  // with beta = 0): allocated uninitialised when new, and *fresh says so.
  Tensor& grad_for_write(int32_t id, bool* fresh);
  // Makes g the gradient of value id (when it has none yet): lets an op whose
  // input gradient equals its output gradient pass the buffer on uncopied.
  void alias_grad(int32_t id, const Tensor& g) { grads_[size_t(id)] = g; }

  void record(const Node& n);
  // Replays every recorded node in reverse. Seeds (the loss node) are nodes
  // that need no output gradient.
  void backward();

  // Runs fn as a recomputed segment: forward keeps only x and the output;
  // backward runs fn again (recording) and back-propagates through it.
  Value checkpoint(SegmentFn fn, void* ctx, int64_t index, const Value& x);

  // Receives gradient-ready events from every later backward (null: none).
  // Not owned; must outlive its registration.
  void set_grad_listener(GradListener* l) { listener_ = l; }
  GradListener* grad_listener() const { return listener_; }

  size_t nodes() const { return nodes_.size(); }
  // Peak activation bytes of the main and the recompute arena.
  size_t high_water() const { return main_.high_water() + scratch_arena_.high_water(); }

 private:
  static void checkpoint_backward(Tape& tape, const Node& node);
  // Runs node n's backward after clearing the stale gradients it accumulates into.
  void run_backward(const Node& n);
  Value register_value(const Tensor& t, Arena* a);
  // Parameters named by node k (a recomputed segment: those of its nodes).
  template <class F>
  void for_each_param(const Node& n, F&& f) const;

  backend::Backend& be_;
  DType dtype_;
  bool recording_ = false;
  Arena main_;
  Arena scratch_arena_;  // activations inside a recomputed segment
  Arena* cur_ = &main_;
  std::vector<Tensor> values_;
  std::vector<Tensor> grads_;
  std::vector<Arena*> value_arena_;
  std::vector<Node> nodes_;
  GradListener* listener_ = nullptr;
  // Parameters used inside recomputed segments, recorded while their forward
  // runs unrecorded; a checkpoint node names its range as i[1], i[2].
  bool segment_forward_ = false;
  std::vector<Parameter*> segment_params_;
  std::unordered_map<Parameter*, int32_t> pending_;  // contributions left, per parameter
};

}  // namespace keel::nn
