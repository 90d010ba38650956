// A Backend that forwards every kernel to another one. Tests derive from it
// and override one kernel to break it on purpose, to show the conformance
// suite catches exactly that kernel.
#pragma once
#include <memory>
#include <string>

#include "backend/backend.h"

namespace keel::backend {

class ForwardingBackend : public Backend {
 public:
  explicit ForwardingBackend(std::unique_ptr<Backend> inner) : in_(std::move(inner)) {}
  std::string_view name() const override { return "forwarding"; }
  std::string describe() const override { return "forwarding to " + in_->describe(); }
  bool supports(Kernel k, DType dt) const override { return in_->supports(k, dt); }
  void set_threads(int n) override { in_->set_threads(n); }
  int threads() const override { return in_->threads(); }

  void matmul(const MatmulArgs& a, const void* A, const void* B, void* C) override {
    in_->matmul(a, A, B, C);
  }
  void embedding_forward(DType dt, const int32_t* ids, const void* table, void* out, int64_t n,
                         int64_t C) override {
    in_->embedding_forward(dt, ids, table, out, n, C);
  }
  void embedding_backward(DType dt, const int32_t* ids, const void* dout, float* dtable, int64_t n,
                          int64_t C) override {
    in_->embedding_backward(dt, ids, dout, dtable, n, C);
  }
  void layernorm_forward(DType dt, const void* x, const void* w, const void* b, void* y,
                         float* mean, float* rstd, int64_t N, int64_t C, float eps) override {
    in_->layernorm_forward(dt, x, w, b, y, mean, rstd, N, C, eps);
  }
  void layernorm_backward(DType dt, const void* dy, const void* x, const void* w, const float* mean,
                          const float* rstd, void* dx, float* dw, float* db, int64_t N,
                          int64_t C) override {
    in_->layernorm_backward(dt, dy, x, w, mean, rstd, dx, dw, db, N, C);
  }
  void rmsnorm_forward(DType dt, const void* x, const void* w, void* y, float* rstd, int64_t N,
                       int64_t C, float eps) override {
    in_->rmsnorm_forward(dt, x, w, y, rstd, N, C, eps);
  }
  void rmsnorm_backward(DType dt, const void* dy, const void* x, const void* w, const float* rstd,
                        void* dx, float* dw, int64_t N, int64_t C) override {
    in_->rmsnorm_backward(dt, dy, x, w, rstd, dx, dw, N, C);
  }
  void rope_forward(const RopeArgs& a, const void* x, void* y) override {
    in_->rope_forward(a, x, y);
  }
  void rope_backward(const RopeArgs& a, const void* dy, void* dx) override {
    in_->rope_backward(a, dy, dx);
  }
  void attention_forward(const AttentionArgs& a, const void* q, const void* k, const void* v,
                         void* o, float* lse) override {
    in_->attention_forward(a, q, k, v, o, lse);
  }
  void attention_backward(const AttentionArgs& a, const void* dout, const void* q, const void* k,
                          const void* v, const void* o, const float* lse, void* dq, void* dk,
                          void* dv) override {
    in_->attention_backward(a, dout, q, k, v, o, lse, dq, dk, dv);
  }
  void gelu_forward(DType dt, const void* x, void* y, int64_t n) override {
    in_->gelu_forward(dt, x, y, n);
  }
  void gelu_backward(DType dt, const void* x, const void* dy, void* dx, int64_t n) override {
    in_->gelu_backward(dt, x, dy, dx, n);
  }
  void silu_forward(DType dt, const void* x, void* y, int64_t n) override {
    in_->silu_forward(dt, x, y, n);
  }
  void silu_backward(DType dt, const void* x, const void* dy, void* dx, int64_t n) override {
    in_->silu_backward(dt, x, dy, dx, n);
  }
  void swiglu_forward(DType dt, const void* gate, const void* up, void* y, int64_t n) override {
    in_->swiglu_forward(dt, gate, up, y, n);
  }
  void swiglu_backward(DType dt, const void* gate, const void* up, const void* dy, void* dgate,
                       void* dup, int64_t n) override {
    in_->swiglu_backward(dt, gate, up, dy, dgate, dup, n);
  }
  void add(DType dt, const void* a, const void* b, void* y, int64_t n) override {
    in_->add(dt, a, b, y, n);
  }
  void accumulate(DType dt, const void* x, void* y, int64_t n, float alpha) override {
    in_->accumulate(dt, x, y, n, alpha);
  }
  void bias_add(DType dt, void* y, const void* bias, int64_t N, int64_t C) override {
    in_->bias_add(dt, y, bias, N, C);
  }
  void bias_backward(DType dt, const void* dy, float* dbias, int64_t N, int64_t C) override {
    in_->bias_backward(dt, dy, dbias, N, C);
  }
  void cross_entropy_forward(DType dt, const void* logits, const int32_t* targets, float* losses,
                             float* lse, int64_t N, int64_t V) override {
    in_->cross_entropy_forward(dt, logits, targets, losses, lse, N, V);
  }
  void cross_entropy_backward(DType dt, const void* logits, const int32_t* targets,
                              const float* lse, const float* dloss, void* dlogits, int64_t N,
                              int64_t V) override {
    in_->cross_entropy_backward(dt, logits, targets, lse, dloss, dlogits, N, V);
  }
  void adamw_update(const AdamWArgs& a, float* param, const float* grad, float* m, float* v,
                    uint16_t* param_bf16) override {
    in_->adamw_update(a, param, grad, m, v, param_bf16);
  }
  void reduce_forward(ReduceOp op, DType dt, const void* x, float* y, int64_t N,
                      int64_t C) override {
    in_->reduce_forward(op, dt, x, y, N, C);
  }
  void reduce_backward(ReduceOp op, DType dt, const void* x, const float* dy, void* dx, int64_t N,
                       int64_t C) override {
    in_->reduce_backward(op, dt, x, dy, dx, N, C);
  }
  void sum_squares(DType dt, const void* x, int64_t n, double* out) override {
    in_->sum_squares(dt, x, n, out);
  }
  void cast(DType src_dt, const void* src, DType dst_dt, void* dst, int64_t n) override {
    in_->cast(src_dt, src, dst_dt, dst, n);
  }
  void quantize(DType qdt, const float* w, void* q, float* scale, int64_t N, int64_t K) override {
    in_->quantize(qdt, w, q, scale, N, K);
  }
  void dequantize(DType qdt, const void* q, const float* scale, float* w, int64_t N,
                  int64_t K) override {
    in_->dequantize(qdt, q, scale, w, N, K);
  }
  void qmatmul(DType qdt, const float* x, const void* wq, const float* wscale, float* y, int64_t M,
               int64_t N, int64_t K) override {
    in_->qmatmul(qdt, x, wq, wscale, y, M, N, K);
  }
  size_t qpack_bytes(DType qdt, int64_t N, int64_t K) const override {
    return in_->qpack_bytes(qdt, N, K);
  }
  void qpack(DType qdt, const void* q, const float* scale, void* packed, int64_t N,
             int64_t K) override {
    in_->qpack(qdt, q, scale, packed, N, K);
  }
  void qmatmul_packed(DType qdt, const float* x, const void* packed, float* y, int64_t M, int64_t N,
                      int64_t K) override {
    in_->qmatmul_packed(qdt, x, packed, y, M, N, K);
  }

  void moe_route_forward(const MoeRouteArgs& a, const float* logits, const float* bias,
                         float* scores, int32_t* idx, float* w) override {
    in_->moe_route_forward(a, logits, bias, scores, idx, w);
  }
  void moe_route_backward(const MoeRouteArgs& a, const float* scores, const int32_t* idx,
                          const float* dw, const float* dscores, float* dlogits) override {
    in_->moe_route_backward(a, scores, idx, dw, dscores, dlogits);
  }
  void moe_permute_forward(DType dt, const int32_t* pos, const void* x, void* xp, int64_t N,
                           int64_t K, int64_t C) override {
    in_->moe_permute_forward(dt, pos, x, xp, N, K, C);
  }
  void moe_permute_backward(DType dt, const int32_t* pos, const void* dxp, void* dx, int64_t N,
                            int64_t K, int64_t C) override {
    in_->moe_permute_backward(dt, pos, dxp, dx, N, K, C);
  }
  void moe_unpermute_forward(DType dt, const int32_t* pos, const float* w, const void* yp, void* y,
                             int64_t N, int64_t K, int64_t C) override {
    in_->moe_unpermute_forward(dt, pos, w, yp, y, N, K, C);
  }
  void moe_unpermute_backward(DType dt, const int32_t* pos, const float* w, const void* yp,
                              const void* dy, void* dyp, float* dw, int64_t N, int64_t K,
                              int64_t C) override {
    in_->moe_unpermute_backward(dt, pos, w, yp, dy, dyp, dw, N, K, C);
  }
  void moe_plan(const int32_t* idx, int64_t N, int64_t K, int64_t E, int64_t capacity, int32_t* pos,
                int64_t* offsets) override {
    in_->moe_plan(idx, N, K, E, capacity, pos, offsets);
  }
  void moe_route_stats(const MoeRouteArgs& a, const float* scores, const int32_t* idx,
                       const int32_t* plain_idx, const int32_t* pos, float* load,
                       double* stats) override {
    in_->moe_route_stats(a, scores, idx, plain_idx, pos, load, stats);
  }
  void moe_aux_loss(const MoeRouteArgs& a, int64_t T, float alpha, float grad_scale,
                    const float* scores, const int32_t* idx, float* dscores,
                    double* loss) override {
    in_->moe_aux_loss(a, T, alpha, grad_scale, scores, idx, dscores, loss);
  }
  void copy_rows(DType dt, const void* src, int64_t src_stride, void* dst, int64_t dst_stride,
                 int64_t rows, int64_t cols, bool accumulate) override {
    in_->copy_rows(dt, src, src_stride, dst, dst_stride, rows, cols, accumulate);
  }
  void mla_qkv_forward(const MlaArgs& a, const void* q, const void* kv, const void* kpe,
                       void* qkv) override {
    in_->mla_qkv_forward(a, q, kv, kpe, qkv);
  }
  void mla_qkv_backward(const MlaArgs& a, const void* g, const void* g_rope, void* dq, void* dkv,
                        void* dkpe) override {
    in_->mla_qkv_backward(a, g, g_rope, dq, dkv, dkpe);
  }
  void grouped_matmul_forward(const GroupedMatmulArgs& a, const void* x, const void* w,
                              void* y) override {
    in_->grouped_matmul_forward(a, x, w, y);
  }
  void grouped_matmul_backward(const GroupedMatmulArgs& a, const void* dy, const void* x,
                               const void* w, void* dx, float* dw) override {
    in_->grouped_matmul_backward(a, dy, x, w, dx, dw);
  }

 protected:
  std::unique_ptr<Backend> in_;
};

}  // namespace keel::backend
