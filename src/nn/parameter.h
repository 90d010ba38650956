// Parameter: a trainable tensor with its f32 master value, its f32 gradient
// and (when computing in bf16) the bf16 copy the kernels read.
#pragma once
#include <cstdint>
#include <string>

#include "core/tensor.h"

namespace keel::nn {

struct Parameter {
  std::string name;   // Hugging Face style, e.g. "h.0.attn.c_attn.weight"
  Tensor value;       // f32 master weights
  Tensor grad;        // f32, same shape; backward accumulates into it
  Tensor compute;     // what forward reads: value itself (f32) or a bf16 copy
  bool decay = true;  // AdamW weight decay applies (matrices yes; norms, biases no)
  // grad holds nothing of this step yet and stands for zeros: the trainer sets
  // this instead of clearing every gradient, so the first backward node that
  // names the parameter either overwrites grad (a linear weight's gradient
  // product with beta = 0) or has the tape clear it just before it runs. That
  // saves a pass over all gradients and the matrix products' read of them.
  bool grad_stale = false;

  int64_t numel() const { return value.numel(); }
};

}  // namespace keel::nn
