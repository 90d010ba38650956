// Fills a KernelTable with the kernel templates instantiated for traits S.
// Included once by each cpu_kernels_<isa>.cpp after it defines KEEL_CPU_ISA.
#pragma once
#include "backend/cpu/cpu_activations.h"
#include "backend/cpu/cpu_adamw.h"
#include "backend/cpu/cpu_attention.h"
#include "backend/cpu/cpu_cast.h"
#include "backend/cpu/cpu_cross_entropy.h"
#include "backend/cpu/cpu_elementwise.h"
#include "backend/cpu/cpu_embedding.h"
#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/cpu_norms.h"
#include "backend/cpu/cpu_reduce.h"
#include "backend/cpu/cpu_rope.h"

namespace keel::backend::cpu::KEEL_CPU_ISA {

template <class S>
KernelTable make_table() {
  KernelTable t{};
  t.embedding_forward = &embedding_forward<S>;
  t.embedding_backward = &embedding_backward<S>;
  t.layernorm_forward = &layernorm_forward<S>;
  t.layernorm_backward = &layernorm_backward<S>;
  t.rmsnorm_forward = &rmsnorm_forward<S>;
  t.rmsnorm_backward = &rmsnorm_backward<S>;
  t.rope_forward = &rope_forward<S>;
  t.rope_backward = &rope_backward<S>;
  t.attention_forward = &attention_forward<S>;
  t.attention_backward = &attention_backward<S>;
  t.gelu_forward = &gelu_forward<S>;
  t.gelu_backward = &gelu_backward<S>;
  t.silu_forward = &silu_forward<S>;
  t.silu_backward = &silu_backward<S>;
  t.swiglu_forward = &swiglu_forward<S>;
  t.swiglu_backward = &swiglu_backward<S>;
  t.add = &add<S>;
  t.accumulate = &accumulate<S>;
  t.bias_add = &bias_add<S>;
  t.bias_backward = &bias_backward<S>;
  t.cross_entropy_forward = &cross_entropy_forward<S>;
  t.cross_entropy_backward = &cross_entropy_backward<S>;
  t.adamw_update = &adamw_update<S>;
  t.reduce_forward = &reduce_forward<S>;
  t.reduce_backward = &reduce_backward<S>;
  t.sum_squares = &sum_squares<S>;
  t.cast = &cast<S>;
  return t;
}

}  // namespace keel::backend::cpu::KEEL_CPU_ISA
