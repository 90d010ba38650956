// Kernels on the Vulkan runtime, each a function the vulkan backend calls
// with device buffers (handle + byte offset + size) in place of host
// pointers. They record into ctx.stream() and return without waiting;
// results are there after synchronize(). Storage is f32 or bf16 (16-bit
// words), math f32; reductions run in a fixed order, never float atomics.
#pragma once
#include <cstdint>

#include "backend/backend.h"
#include "backend/vulkan/vk_context.h"
#include "backend/vulkan/vk_memory_pool.h"

namespace keel::vulkan {

// backend.h's MatmulArgs over device buffers: (a,b,c) dtypes (F32,F32,F32),
// (BF16,BF16,F32) or (BF16,BF16,BF16); f32 accumulation in ascending k.
void matmul(Context& ctx, const backend::MatmulArgs& a, const Buffer& A, const Buffer& B,
            const Buffer& C);
// y = a + b (F32 or BF16; y may alias a or b).
void add(Context& ctx, DType dt, const Buffer& a, const Buffer& b, const Buffer& y, int64_t n);
// y += alpha * x.
void accumulate(Context& ctx, DType dt, const Buffer& x, const Buffer& y, int64_t n, float alpha);

enum class Activation : uint32_t { Gelu = 0, Silu = 1 };
// y = f(x); backward: dx += dy * f'(x).
void activation_forward(Context& ctx, Activation f, DType dt, const Buffer& x, const Buffer& y,
                        int64_t n);
void activation_backward(Context& ctx, Activation f, DType dt, const Buffer& x, const Buffer& dy,
                         const Buffer& dx, int64_t n);
// y = silu(gate) * up; backward dgate += ..., dup += ... (backend.h).
void swiglu_forward(Context& ctx, DType dt, const Buffer& gate, const Buffer& up, const Buffer& y,
                    int64_t n);
void swiglu_backward(Context& ctx, DType dt, const Buffer& gate, const Buffer& up, const Buffer& dy,
                     const Buffer& dgate, const Buffer& dup, int64_t n);
// F32 <-> BF16 (either way or a copy), nearest even as core/dtype.h.
void cast(Context& ctx, DType src_dt, const Buffer& src, DType dst_dt, const Buffer& dst,
          int64_t n);
// RMSNorm forward over rows (N, C): y = x * rstd * w, rstd f32 (N).
void rmsnorm_forward(Context& ctx, DType dt, const Buffer& x, const Buffer& w, const Buffer& y,
                     const Buffer& rstd, int64_t N, int64_t C, float eps);
// RMSNorm backward with the saved rstd: dx += ..., dw (f32) += ... (backend.h).
void rmsnorm_backward(Context& ctx, DType dt, const Buffer& dy, const Buffer& x, const Buffer& w,
                      const Buffer& rstd, const Buffer& dx, const Buffer& dw, int64_t N, int64_t C);
// out[i, :] = table[ids[i], :]; backward dtable (f32)[ids[i], :] += dout[i, :].
void embedding_forward(Context& ctx, DType dt, const Buffer& ids, const Buffer& table,
                       const Buffer& out, int64_t n, int64_t C);
void embedding_backward(Context& ctx, DType dt, const Buffer& ids, const Buffer& dout,
                        const Buffer& dtable, int64_t n, int64_t C);
// y[N, C] += bias[C]; backward dbias (f32)[c] += sum_i dy[i, c].
void bias_add(Context& ctx, DType dt, const Buffer& y, const Buffer& bias, int64_t N, int64_t C);
void bias_backward(Context& ctx, DType dt, const Buffer& dy, const Buffer& dbias, int64_t N,
                   int64_t C);
// LayerNorm (backend.h): forward writes y, mean, rstd (f32); backward adds
// into dx, dw and (when has_bias) db. Unused buffers may be any valid range.
void layernorm_forward(Context& ctx, DType dt, const Buffer& x, const Buffer& w, const Buffer& b,
                       bool has_bias, const Buffer& y, const Buffer& mean, const Buffer& rstd,
                       int64_t N, int64_t C, float eps);
void layernorm_backward(Context& ctx, DType dt, const Buffer& dy, const Buffer& x, const Buffer& w,
                        const Buffer& mean, const Buffer& rstd, const Buffer& dx, const Buffer& dw,
                        const Buffer& db, bool has_bias, int64_t N, int64_t C);
// Rotary embedding (backend.h's RopeArgs); `freq` holds HS/2 doubles
// theta^(-2i/HS). Forward writes y (may alias x); backward adds into dx.
void rope(Context& ctx, const backend::RopeArgs& a, const Buffer& freq, const Buffer& x,
          const Buffer& y, bool backward);
// Softmax cross-entropy over rows (N, V): forward writes losses and lse
// (f32); backward adds dloss * (softmax - onehot) into dlogits.
void cross_entropy_forward(Context& ctx, DType dt, const Buffer& logits, const Buffer& targets,
                           const Buffer& losses, const Buffer& lse, int64_t N, int64_t V);
void cross_entropy_backward(Context& ctx, DType dt, const Buffer& logits, const Buffer& targets,
                            const Buffer& lse, const Buffer& dloss, const Buffer& dlogits,
                            int64_t N, int64_t V);
// AdamW on f32 master weights; param_bf16 written when given.
void adamw(Context& ctx, const backend::AdamWArgs& a, const Buffer& param, const Buffer& grad,
           const Buffer& m, const Buffer& v, const Buffer* param_bf16);
// Reductions over the last axis (backend.h's reduce_forward/backward).
void reduce(Context& ctx, backend::ReduceOp op, DType dt, const Buffer& x, const Buffer& y,
            const Buffer& dx, int64_t N, int64_t C, bool backward);
// Causal attention (backend.h's AttentionArgs), HS <= 512.
void attention_forward(Context& ctx, const backend::AttentionArgs& a, const Buffer& q,
                       const Buffer& k, const Buffer& v, const Buffer& o, const Buffer& lse);
void attention_backward(Context& ctx, const backend::AttentionArgs& a, const Buffer& dout,
                        const Buffer& q, const Buffer& k, const Buffer& v, const Buffer& o,
                        const Buffer& lse, const Buffer& dq, const Buffer& dk, const Buffer& dv);
// Weight quantization of w (N, K) f32 rows to qdt (I8 with scale[N], or
// Q8_0 / Q4_0 blocks, scale unused) and back (backend.h's rules).
void quantize(Context& ctx, DType qdt, const Buffer& w, const Buffer& q, const Buffer& scale,
              int64_t N, int64_t K);
void dequantize(Context& ctx, DType qdt, const Buffer& q, const Buffer& scale, const Buffer& w,
                int64_t N, int64_t K);
// Bytes of the quantized x that qmatmul needs in `xq` (codes, or Q8_0
// blocks) and `xs` (row scales, I8 only).
uint64_t qmatmul_scratch_bytes(DType qdt, int64_t M, int64_t K);
// y[M, N] f32 = x[M, K] @ dequant(W)^T with x quantized first into xq/xs.
void qmatmul(Context& ctx, DType qdt, const Buffer& x, const Buffer& wq, const Buffer& wscale,
             const Buffer& y, const Buffer& xq, const Buffer& xs, int64_t M, int64_t N, int64_t K);
// MoE routing (backend.h's MoeRouteArgs). Forward: logits, bias (when
// has_bias) -> scores, idx, w. Backward: dw, dscores (when has_dscores),
// scores, idx -> dlogits +=.
void moe_route_forward(Context& ctx, const backend::MoeRouteArgs& a, const Buffer& logits,
                       const Buffer& bias, bool has_bias, const Buffer& scores, const Buffer& idx,
                       const Buffer& w);
void moe_route_backward(Context& ctx, const backend::MoeRouteArgs& a, const Buffer& scores,
                        const Buffer& idx, const Buffer& dw, const Buffer& dscores,
                        bool has_dscores, const Buffer& dlogits);
// Permutation to expert order and back; mode as moe_permute.comp (0 permute
// fwd, 1 permute bwd, 2 unpermute fwd, 3 unpermute bwd dyp, 4 unpermute bwd dw).
void moe_permute(Context& ctx, uint32_t mode, DType dt, const Buffer& pos, const Buffer& w,
                 const Buffer& a, const Buffer& b, const Buffer& d, const Buffer& dw, int64_t N,
                 int64_t K, int64_t C);
// One matmul per group; `offsets` is G + 1 int64 in device memory; mode as
// grouped_matmul.comp (0 forward, 1 dx, 2 dw).
void grouped_matmul(Context& ctx, uint32_t mode, const backend::GroupedMatmulArgs& a,
                    const Buffer& offsets, const Buffer& x, const Buffer& w, const Buffer& y,
                    const Buffer& dx, const Buffer& dw, int64_t rows);
// The routing's dispatch plan (backend.h's moe_plan): pos (N, K) i32 and
// offsets (E + 1 int64).
void moe_plan(Context& ctx, const Buffer& idx, int64_t N, int64_t K, int64_t E, int64_t capacity,
              const Buffer& pos, const Buffer& offsets);
// Routing statistics and the balance loss (backend.h's moe_route_stats and
// moe_aux_loss); need shaderFloat64.
void moe_route_stats(Context& ctx, const backend::MoeRouteArgs& a, const Buffer& scores,
                     const Buffer& idx, const Buffer& plain_idx, const Buffer& pos,
                     const Buffer& load, const Buffer& stats);
void moe_aux_loss(Context& ctx, const backend::MoeRouteArgs& a, int64_t T, float alpha,
                  float grad_scale, const Buffer& scores, const Buffer& idx, const Buffer& dscores,
                  const Buffer& loss);
// Strided rows (backend.h's copy_rows).
void copy_rows(Context& ctx, DType dt, const Buffer& src, int64_t src_stride, const Buffer& dst,
               int64_t dst_stride, int64_t rows, int64_t cols, bool accumulate);
// MLA's q/k/v assembly and its gradient (backend.h's mla_qkv_*).
void mla_qkv_forward(Context& ctx, const backend::MlaArgs& a, const Buffer& q, const Buffer& kv,
                     const Buffer& kpe, const Buffer& qkv);
void mla_qkv_backward(Context& ctx, const backend::MlaArgs& a, const Buffer& g,
                      const Buffer& g_rope, const Buffer& dq, const Buffer& dkv,
                      const Buffer& dkpe);
// out[0] (f64) = sum of x[i]^2 in f64 over fixed 4096-element chunks combined
// in a fixed order; `partials` holds sum_squares_partials(n) doubles. Needs
// the device's shaderFloat64 (DeviceInfo::float64).
void sum_squares(Context& ctx, DType dt, const Buffer& x, int64_t n, const Buffer& partials,
                 const Buffer& out);
int64_t sum_squares_partials(int64_t n);
// Convenience: allocates scratch, runs sum_squares and synchronizes.
double sum_squares(Context& ctx, DType dt, const Buffer& x, int64_t n);

}  // namespace keel::vulkan
