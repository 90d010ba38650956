// Internal to the ref backend: the scalar kernels as free functions, one file
// per concept (ref_matmul.cpp, ref_norms.cpp, ...), plus the element access and
// dtype dispatch helpers they share. Inputs are loaded as f32, arithmetic runs
// in double, and each output element is rounded once to its dtype.
#pragma once
#include <cstdint>

#include "backend/backend.h"
#include "core/dtype.h"
#include "core/error.h"

namespace keel::backend::ref {

// Calls f(T{}) with T the storage type of float dtype dt.
template <class F>
void visit_float(DType dt, F&& f) {
  switch (dt) {
    case DType::F32:
      f(float{});
      return;
    case DType::BF16:
      f(bf16_t{});
      return;
    case DType::F16:
      f(f16_t{});
      return;
    default:
      fail("ref backend: dtype {} is not a float type", dtype_name(dt));
  }
}

template <class T>
inline double ld(const void* p, int64_t i) {
  return double(to_f32(static_cast<const T*>(p)[i]));
}
template <class T>
inline void st(void* p, int64_t i, double v) {
  static_cast<T*>(p)[i] = from_f32<T>(float(v));
}
// p[i] += v, rounded once.
template <class T>
inline void st_add(void* p, int64_t i, double v) {
  st<T>(p, i, ld<T>(p, i) + v);
}

void matmul(const MatmulArgs& a, const void* A, const void* B, void* C);

void embedding_forward(DType dt, const int32_t* ids, const void* table, void* out, int64_t n,
                       int64_t C);
void embedding_backward(DType dt, const int32_t* ids, const void* dout, float* dtable, int64_t n,
                        int64_t C);

void layernorm_forward(DType dt, const void* x, const void* w, const void* b, void* y, float* mean,
                       float* rstd, int64_t N, int64_t C, float eps);
void layernorm_backward(DType dt, const void* dy, const void* x, const void* w, const float* mean,
                        const float* rstd, void* dx, float* dw, float* db, int64_t N, int64_t C);
void rmsnorm_forward(DType dt, const void* x, const void* w, void* y, float* rstd, int64_t N,
                     int64_t C, float eps);
void rmsnorm_backward(DType dt, const void* dy, const void* x, const void* w, const float* rstd,
                      void* dx, float* dw, int64_t N, int64_t C);

void rope_forward(const RopeArgs& a, const void* x, void* y);
void rope_backward(const RopeArgs& a, const void* dy, void* dx);
void attention_forward(const AttentionArgs& a, const void* q, const void* k, const void* v, void* o,
                       float* lse);
void attention_backward(const AttentionArgs& a, const void* dout, const void* q, const void* k,
                        const void* v, void* dq, void* dk, void* dv);

void gelu_forward(DType dt, const void* x, void* y, int64_t n);
void gelu_backward(DType dt, const void* x, const void* dy, void* dx, int64_t n);
void silu_forward(DType dt, const void* x, void* y, int64_t n);
void silu_backward(DType dt, const void* x, const void* dy, void* dx, int64_t n);
void swiglu_forward(DType dt, const void* gate, const void* up, void* y, int64_t n);
void swiglu_backward(DType dt, const void* gate, const void* up, const void* dy, void* dgate,
                     void* dup, int64_t n);
void add(DType dt, const void* a, const void* b, void* y, int64_t n);
void accumulate(DType dt, const void* x, void* y, int64_t n, float alpha);
void bias_add(DType dt, void* y, const void* bias, int64_t N, int64_t C);
void bias_backward(DType dt, const void* dy, float* dbias, int64_t N, int64_t C);
void reduce_forward(ReduceOp op, DType dt, const void* x, float* y, int64_t N, int64_t C);
void reduce_backward(ReduceOp op, DType dt, const void* x, const float* dy, void* dx, int64_t N,
                     int64_t C);
double sum_squares(DType dt, const void* x, int64_t n);
void cast(DType src_dt, const void* src, DType dst_dt, void* dst, int64_t n);

void cross_entropy_forward(DType dt, const void* logits, const int32_t* targets, float* losses,
                           float* lse, int64_t N, int64_t V);
void cross_entropy_backward(DType dt, const void* logits, const int32_t* targets,
                            const float* dloss, void* dlogits, int64_t N, int64_t V);
void adamw_update(const AdamWArgs& a, float* param, const float* grad, float* m, float* v,
                  uint16_t* param_bf16);

void quantize(DType qdt, const float* w, void* q, float* scale, int64_t N, int64_t K);
void dequantize(DType qdt, const void* q, const float* scale, float* w, int64_t N, int64_t K);
void qmatmul(DType qdt, const float* x, const void* wq, const float* wscale, float* y, int64_t M,
             int64_t N, int64_t K);

// ---- layouts (ref_layout.cpp)
void copy_rows(DType dt, const void* src, int64_t src_stride, void* dst, int64_t dst_stride,
               int64_t rows, int64_t cols, bool accumulate);
void mla_qkv_forward(const MlaArgs& a, const void* q, const void* kv, const void* kpe, void* qkv);
void mla_qkv_backward(const MlaArgs& a, const void* g, const void* g_rope, void* dq, void* dkv,
                      void* dkpe);

// ---- mixture of experts (ref_moe.cpp)
void moe_route_forward(const MoeRouteArgs& a, const float* logits, const float* bias,
                       float* scores, int32_t* idx, float* w);
void moe_route_backward(const MoeRouteArgs& a, const float* scores, const int32_t* idx,
                        const float* dw, const float* dscores, float* dlogits);
void moe_permute_forward(DType dt, const int32_t* pos, const void* x, void* xp, int64_t N,
                         int64_t K, int64_t C);
void moe_permute_backward(DType dt, const int32_t* pos, const void* dxp, void* dx, int64_t N,
                          int64_t K, int64_t C);
void moe_unpermute_forward(DType dt, const int32_t* pos, const float* w, const void* yp, void* y,
                           int64_t N, int64_t K, int64_t C);
void moe_unpermute_backward(DType dt, const int32_t* pos, const float* w, const void* yp,
                            const void* dy, void* dyp, float* dw, int64_t N, int64_t K, int64_t C);
void moe_plan(const int32_t* idx, int64_t N, int64_t K, int64_t E, int64_t capacity, int32_t* pos,
              int64_t* offsets);
void moe_route_stats(const MoeRouteArgs& a, const float* scores, const int32_t* idx,
                     const int32_t* plain_idx, const int32_t* pos, float* load, double* stats);
void moe_aux_loss(const MoeRouteArgs& a, int64_t T, float alpha, float grad_scale,
                  const float* scores, const int32_t* idx, float* dscores, double* loss);
void grouped_matmul_forward(const GroupedMatmulArgs& a, const void* x, const void* w, void* y);
void grouped_matmul_backward(const GroupedMatmulArgs& a, const void* dy, const void* x,
                             const void* w, void* dx, float* dw);

}  // namespace keel::backend::ref
