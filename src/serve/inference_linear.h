// One linear layer's weights as the inference forward holds them: f32, or
// quantized at load time (int8 per output row, Q8_0 / Q4_0 blocks of 32),
// multiplied through the backend's matmul or qmatmul. Shared by every
// architecture's inference path.
#pragma once
#include <cstdint>
#include <vector>

#include "backend/backend.h"
#include "core/tensor.h"

namespace keel::serve {

struct InferenceLinear {
  int64_t N = 0, K = 0;
  DType dt = DType::F32;
  Tensor w;      // (N, K) f32 or quantized
  Tensor scale;  // (N) f32 for I8
  Tensor bias;   // (N) f32 or undefined
};

// Stacks the f32 parts (each (n_i, K)) by rows and stores them as `format`.
// A blocked format whose block does not divide K keeps the weight f32 (with
// a warning). The stored weight is backed by huge pages where the kernel can.
InferenceLinear make_inference_linear(backend::Backend& be, const std::vector<const Tensor*>& parts,
                                      const Tensor* bias, DType format);

// y (M, N) := x (M, K) times the weight transposed, plus the bias if any.
void apply_inference_linear(backend::Backend& be, const InferenceLinear& l, const float* x,
                            float* y, int64_t M);

}  // namespace keel::serve
