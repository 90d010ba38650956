// One linear layer's weights as the inference forward holds them: f32, or
// quantized at load time (int8 per output row, Q8_0 / Q4_0 blocks of 32),
// multiplied through the backend's matmul or qmatmul. Shared by every
// architecture's inference path.
#pragma once
#include <algorithm>
#include <cstdint>
#include <vector>

#include "backend/backend.h"
#include "backend/device_tensor.h"
#include "core/tensor.h"

namespace keel::serve {

struct InferenceLinear {
  int64_t N = 0, K = 0;
  DType dt = DType::F32;
  Tensor w;             // (N, K) f32 or quantized, or the backend's packed bytes
  Tensor scale;         // (N) f32 for I8 (not when packed: the scales are inside)
  bool packed = false;  // w is in the backend's qmatmul_packed layout
  Tensor bias;          // (N) f32 or undefined
};

// Stacks the f32 parts (each (n_i, K)) by rows and stores them as `format`.
// A blocked format whose block does not divide K keeps the weight f32 (with
// a warning). A quantized weight is kept in the backend's packed layout when
// it has one (Backend::qpack_bytes). The stored weight is backed by huge
// pages where the kernel can.
InferenceLinear make_inference_linear(backend::Backend& be, const std::vector<const Tensor*>& parts,
                                      const Tensor* bias, DType format);

// y (M, N) := x (M, K) times the weight transposed, plus the bias if any.
void apply_inference_linear(backend::Backend& be, const InferenceLinear& l, const float* x,
                            float* y, int64_t M);

// logits (M, N) in host memory := x (M, K) times the head's weight: written
// in place on a host-memory backend; on a device computed into `scratch`
// and read back (the forward call's one wait).
void apply_inference_head(backend::Backend& be, const InferenceLinear& head, const float* x,
                          float* logits, int64_t M, Tensor& scratch);

// buf grown to at least n elements of dt in be's memory (contents not kept):
// the inference paths' activation buffers.
template <class T>
T* grown(backend::Backend& be, Tensor& buf, int64_t n, DType dt) {
  if (!buf.defined() || buf.numel() < n)
    buf = backend::empty_on(be, Shape{std::max<int64_t>(n, 1)}, dt, "inference activations");
  return buf.data<T>();
}

}  // namespace keel::serve
