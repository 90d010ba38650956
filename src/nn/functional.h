// Differentiable ops on tape Values: each runs its forward kernel and records a
// Node whose backward accumulates into the inputs' gradients (activations on
// the tape, parameters into Parameter::grad). Parameters are read through
// Parameter::compute, so the same code runs in f32 and bf16.
#pragma once
#include <cstdint>

#include "nn/parameter.h"
#include "nn/tape.h"

namespace keel::nn {

// ids i32 (B, T) -> (B, T, C) rows of table.
Value embedding(Tape& tape, const Tensor& ids, Parameter& table);
// y = a + b (same shape and dtype).
Value add(Tape& tape, const Value& a, const Value& b);

// y = x w^T (+ bias): x (..., in), w (out, in) like torch.nn.Linear, y (..., out).
Value linear(Tape& tape, const Value& x, Parameter& w, Parameter* bias);
// Same with y of out_dtype: F32 over bf16 activations gives the LM head's f32
// logits (its gradient is rounded to bf16 once, in backward).
Value linear_out(Tape& tape, const Value& x, Parameter& w, Parameter* bias, DType out_dtype);
// Same, but writes columns [col0, col0 + out) of y (..., ld), a value made by
// the caller: several projections (q, k, v) fill one fused buffer. No bias.
void linear_into(Tape& tape, const Value& x, Parameter& w, const Value& y, int64_t col0);

Value layernorm(Tape& tape, const Value& x, Parameter& w, Parameter* bias, float eps);
Value rmsnorm(Tape& tape, const Value& x, Parameter& w, float eps);
Value gelu(Tape& tape, const Value& x);
// silu(gate) * up
Value swiglu(Tape& tape, const Value& gate, const Value& up);

struct AttentionShape {
  int64_t B = 0, T = 0, NH = 0, NKV = 0, HS = 0;
  bool rope = false;  // rotate q and k (adjacent pairs) before attention
  float rope_theta = 10000.f;
};
// Causal attention reading q, k, v straight from the fused projection
// qkv (B, T, (NH + 2*NKV) * HS) = [q heads | k heads | v heads] per token.
// RoPE, when on, rotates q and k in place inside qkv. Returns (B, T, NH * HS).
Value causal_attention(Tape& tape, const Value& qkv, const AttentionShape& s);

// Mean cross-entropy of logits (N, V) against targets i32 (N) (< 0 ignored).
// When recording, the loss node seeds backward with d(loss * grad_scale).
float cross_entropy(Tape& tape, const Value& logits, const Tensor& targets, float grad_scale);

}  // namespace keel::nn
