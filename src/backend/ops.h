// Tensor-level entry points to the kernels: each validates shapes, dtypes and
// contiguity once, then calls the backend's raw kernel. A violation throws
// keel::KernelError "[kernel] ..." naming the tensors' shapes and dtypes.
// Semantics (accumulating backward, f32 statistics) are those of backend.h.
#pragma once
#include "backend/backend.h"
#include "core/tensor.h"

namespace keel::ops {

using backend::Backend;

// c = alpha * op(a) @ op(b) + beta * c. a, b, c are 2-D, or 3-D with a common
// leading batch dim (b may also be 2-D and shared across the batch).
void matmul(Backend& be, const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& c,
            float alpha = 1.f, float beta = 0.f);

// ids: i32 (n) or (B, T); table (V, C); out (n, C) or (B, T, C). dtable f32 (V, C).
void embedding_forward(Backend& be, const Tensor& ids, const Tensor& table, Tensor& out);
void embedding_backward(Backend& be, const Tensor& ids, const Tensor& dout, Tensor& dtable);

// x, y (..., C); w, b (C) of x's dtype; b may be undefined. mean, rstd f32 (rows).
void layernorm_forward(Backend& be, const Tensor& x, const Tensor& w, const Tensor& b, Tensor& y,
                       Tensor& mean, Tensor& rstd, float eps);
// dw, db f32 (C); db may be undefined.
void layernorm_backward(Backend& be, const Tensor& dy, const Tensor& x, const Tensor& w,
                        const Tensor& mean, const Tensor& rstd, Tensor& dx, Tensor& dw,
                        Tensor& db);
void rmsnorm_forward(Backend& be, const Tensor& x, const Tensor& w, Tensor& y, Tensor& rstd,
                     float eps);
void rmsnorm_backward(Backend& be, const Tensor& dy, const Tensor& x, const Tensor& w,
                      const Tensor& rstd, Tensor& dx, Tensor& dw);

// x, y contiguous (B, T, NH, HS).
void rope_forward(Backend& be, const Tensor& x, Tensor& y, int64_t pos0, float theta);
void rope_backward(Backend& be, const Tensor& dy, Tensor& dx, int64_t pos0, float theta);

// q (B, Tq, NH, HS), k and v (B, Tk, NKV, HS), o (B, Tq, NH, HS), lse f32 (B, NH, Tq);
// all contiguous. scale defaults to 1/sqrt(HS) when <= 0.
void attention_forward(Backend& be, const Tensor& q, const Tensor& k, const Tensor& v, Tensor& o,
                       Tensor& lse, float scale = 0.f);
void attention_backward(Backend& be, const Tensor& dout, const Tensor& q, const Tensor& k,
                        const Tensor& v, const Tensor& o, const Tensor& lse, Tensor& dq,
                        Tensor& dk, Tensor& dv, float scale = 0.f);

void gelu_forward(Backend& be, const Tensor& x, Tensor& y);
void gelu_backward(Backend& be, const Tensor& x, const Tensor& dy, Tensor& dx);
void silu_forward(Backend& be, const Tensor& x, Tensor& y);
void silu_backward(Backend& be, const Tensor& x, const Tensor& dy, Tensor& dx);
void swiglu_forward(Backend& be, const Tensor& gate, const Tensor& up, Tensor& y);
void swiglu_backward(Backend& be, const Tensor& gate, const Tensor& up, const Tensor& dy,
                     Tensor& dgate, Tensor& dup);

void add(Backend& be, const Tensor& a, const Tensor& b, Tensor& y);
// y += alpha * x
void accumulate(Backend& be, const Tensor& x, Tensor& y, float alpha = 1.f);
// y (..., C) += bias (C); dbias f32 (C) += column sums of dy.
void bias_add(Backend& be, Tensor& y, const Tensor& bias);
void bias_backward(Backend& be, const Tensor& dy, Tensor& dbias);

// logits (N, V), targets i32 (N), losses and lse f32 (N).
void cross_entropy_forward(Backend& be, const Tensor& logits, const Tensor& targets,
                           Tensor& losses, Tensor& lse);
void cross_entropy_backward(Backend& be, const Tensor& logits, const Tensor& targets,
                            const Tensor& lse, const Tensor& dloss, Tensor& dlogits);

// param, grad, m, v f32 of equal numel; param_bf16 undefined or bf16 of that numel.
void adamw_update(Backend& be, const backend::AdamWArgs& args, Tensor& param, const Tensor& grad,
                  Tensor& m, Tensor& v, Tensor& param_bf16);

// x (..., C) -> y f32 (rows)
void reduce_forward(Backend& be, backend::ReduceOp op, const Tensor& x, Tensor& y);
void reduce_backward(Backend& be, backend::ReduceOp op, const Tensor& x, const Tensor& dy,
                     Tensor& dx);
double sum_squares(Backend& be, const Tensor& x);

// dst must have src's shape; dtypes among F32, BF16, F16.
void cast(Backend& be, const Tensor& src, Tensor& dst);

// w f32 (N, K) -> q of dtype I8 (N, K) with scale f32 (N), or Q4_0 / Q8_0 (N, K), scale undefined.
void quantize(Backend& be, const Tensor& w, Tensor& q, Tensor& scale);
void dequantize(Backend& be, const Tensor& q, const Tensor& scale, Tensor& w);
// x f32 (M, K), wq (N, K) quantized, y f32 (M, N).
void qmatmul(Backend& be, const Tensor& x, const Tensor& wq, const Tensor& wscale, Tensor& y);

}  // namespace keel::ops
