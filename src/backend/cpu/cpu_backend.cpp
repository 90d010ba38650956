// CpuBackend: GEMM and quantized matmul from gemm.h, every other kernel from
// the KernelTable of the chosen vector level, all with the same thread count.
#include "backend/cpu/cpu_backend.h"

#include <omp.h>

#include <cstring>

#include <fmt/format.h>

#include "backend/cpu/cpu_kernels.h"
#include "backend/cpu/cpu_moe.h"
#include "backend/cpu/gemm.h"
#include "backend/ref/ref_kernels.h"
#include "core/error.h"

namespace keel::backend {
namespace {

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(cpu::Level level)
      : level_(level), k_(cpu::kernels_for(level)), threads_(omp_get_max_threads()) {
    if (threads_ < 1) threads_ = 1;
    cpu::gemm_load();
  }

  std::string_view name() const override { return "cpu"; }
  std::string describe() const override {
    return fmt::format("cpu: vector level {}, {} thread{}, gemm: {}", cpu::level_name(level_),
                       threads_, threads_ == 1 ? "" : "s", cpu::gemm_describe());
  }

  bool supports(Kernel k, DType dt) const override { return standard_dtype_support(k, dt); }

  void set_threads(int n) override { threads_ = n < 1 ? 1 : n; }
  int threads() const override { return threads_; }

  void matmul(const MatmulArgs& a, const void* A, const void* B, void* C) override {
    cpu::gemm(a, A, B, C, threads_);
  }

  void embedding_forward(DType dt, const int32_t* ids, const void* table, void* out, int64_t n,
                         int64_t C) override {
    k_.embedding_forward(dt, ids, table, out, n, C, threads_);
  }
  void embedding_backward(DType dt, const int32_t* ids, const void* dout, float* dtable, int64_t n,
                          int64_t C) override {
    k_.embedding_backward(dt, ids, dout, dtable, n, C, threads_);
  }

  void layernorm_forward(DType dt, const void* x, const void* w, const void* b, void* y,
                         float* mean, float* rstd, int64_t N, int64_t C, float eps) override {
    k_.layernorm_forward(dt, x, w, b, y, mean, rstd, N, C, eps, threads_);
  }
  void layernorm_backward(DType dt, const void* dy, const void* x, const void* w, const float* mean,
                          const float* rstd, void* dx, float* dw, float* db, int64_t N,
                          int64_t C) override {
    k_.layernorm_backward(dt, dy, x, w, mean, rstd, dx, dw, db, N, C, threads_);
  }
  void rmsnorm_forward(DType dt, const void* x, const void* w, void* y, float* rstd, int64_t N,
                       int64_t C, float eps) override {
    k_.rmsnorm_forward(dt, x, w, y, rstd, N, C, eps, threads_);
  }
  void rmsnorm_backward(DType dt, const void* dy, const void* x, const void* w, const float* rstd,
                        void* dx, float* dw, int64_t N, int64_t C) override {
    k_.rmsnorm_backward(dt, dy, x, w, rstd, dx, dw, N, C, threads_);
  }

  void rope_forward(const RopeArgs& a, const void* x, void* y) override {
    k_.rope_forward(a, x, y, threads_);
  }
  void rope_backward(const RopeArgs& a, const void* dy, void* dx) override {
    k_.rope_backward(a, dy, dx, threads_);
  }

  void attention_forward(const AttentionArgs& a, const void* q, const void* k, const void* v,
                         void* o, float* lse) override {
    k_.attention_forward(a, q, k, v, o, lse, threads_);
  }
  void attention_backward(const AttentionArgs& a, const void* dout, const void* q, const void* k,
                          const void* v, const void* o, const float* lse, void* dq, void* dk,
                          void* dv) override {
    k_.attention_backward(a, dout, q, k, v, o, lse, dq, dk, dv, threads_);
  }

  void gelu_forward(DType dt, const void* x, void* y, int64_t n) override {
    k_.gelu_forward(dt, x, y, n, threads_);
  }
  void gelu_backward(DType dt, const void* x, const void* dy, void* dx, int64_t n) override {
    k_.gelu_backward(dt, x, dy, dx, n, threads_);
  }
  void silu_forward(DType dt, const void* x, void* y, int64_t n) override {
    k_.silu_forward(dt, x, y, n, threads_);
  }
  void silu_backward(DType dt, const void* x, const void* dy, void* dx, int64_t n) override {
    k_.silu_backward(dt, x, dy, dx, n, threads_);
  }
  void swiglu_forward(DType dt, const void* gate, const void* up, void* y, int64_t n) override {
    k_.swiglu_forward(dt, gate, up, y, n, threads_);
  }
  void swiglu_backward(DType dt, const void* gate, const void* up, const void* dy, void* dgate,
                       void* dup, int64_t n) override {
    k_.swiglu_backward(dt, gate, up, dy, dgate, dup, n, threads_);
  }

  void add(DType dt, const void* a, const void* b, void* y, int64_t n) override {
    k_.add(dt, a, b, y, n, threads_);
  }
  void accumulate(DType dt, const void* x, void* y, int64_t n, float alpha) override {
    k_.accumulate(dt, x, y, n, alpha, threads_);
  }
  void bias_add(DType dt, void* y, const void* bias, int64_t N, int64_t C) override {
    k_.bias_add(dt, y, bias, N, C, threads_);
  }
  void bias_backward(DType dt, const void* dy, float* dbias, int64_t N, int64_t C) override {
    k_.bias_backward(dt, dy, dbias, N, C, threads_);
  }

  void cross_entropy_forward(DType dt, const void* logits, const int32_t* targets, float* losses,
                             float* lse, int64_t N, int64_t V) override {
    k_.cross_entropy_forward(dt, logits, targets, losses, lse, N, V, threads_);
  }
  void cross_entropy_backward(DType dt, const void* logits, const int32_t* targets,
                              const float* lse, const float* dloss, void* dlogits, int64_t N,
                              int64_t V) override {
    k_.cross_entropy_backward(dt, logits, targets, lse, dloss, dlogits, N, V, threads_);
  }

  bool digests_moments() const override { return true; }
  void adamw_update(const AdamWArgs& a, float* param, const float* grad, float* m, float* v,
                    uint16_t* param_bf16) override {
    k_.adamw_update(a, param, grad, m, v, param_bf16, threads_);
  }

  void reduce_forward(ReduceOp op, DType dt, const void* x, float* y, int64_t N,
                      int64_t C) override {
    k_.reduce_forward(op, dt, x, y, N, C, threads_);
  }
  void reduce_backward(ReduceOp op, DType dt, const void* x, const float* dy, void* dx, int64_t N,
                       int64_t C) override {
    k_.reduce_backward(op, dt, x, dy, dx, N, C, threads_);
  }
  void sum_squares(DType dt, const void* x, int64_t n, double* out) override {
    *out = k_.sum_squares(dt, x, n, threads_);
  }

  void cast(DType src_dt, const void* src, DType dst_dt, void* dst, int64_t n) override {
    k_.cast(src_dt, src, dst_dt, dst, n, threads_);
  }

  void quantize(DType qdt, const float* w, void* q, float* scale, int64_t N, int64_t K) override {
    cpu::quantize(qdt, w, q, scale, N, K, threads_);
  }
  void dequantize(DType qdt, const void* q, const float* scale, float* w, int64_t N,
                  int64_t K) override {
    cpu::dequantize(qdt, q, scale, w, N, K, threads_);
  }
  void qmatmul(DType qdt, const float* x, const void* wq, const float* wscale, float* y, int64_t M,
               int64_t N, int64_t K) override {
    cpu::qmatmul(qdt, x, wq, wscale, y, M, N, K, threads_);
  }
  size_t qpack_bytes(DType qdt, int64_t N, int64_t K) const override {
    return size_t(cpu::qpack_bytes(qdt, N, K));
  }
  void qpack(DType qdt, const void* q, const float* scale, void* packed, int64_t N,
             int64_t K) override {
    cpu::qpack(qdt, q, scale, packed, N, K);
  }
  void qmatmul_packed(DType qdt, const float* x, const void* packed, float* y, int64_t M, int64_t N,
                      int64_t K) override {
    cpu::qmatmul_packed(qdt, x, packed, y, M, N, K, threads_);
  }

  void moe_route_forward(const MoeRouteArgs& a, const float* logits, const float* bias,
                         float* scores, int32_t* idx, float* w) override {
    cpu::moe::route_forward(a, logits, bias, scores, idx, w, threads_);
  }
  void moe_route_backward(const MoeRouteArgs& a, const float* scores, const int32_t* idx,
                          const float* dw, const float* dscores, float* dlogits) override {
    cpu::moe::route_backward(a, scores, idx, dw, dscores, dlogits, threads_);
  }
  void moe_permute_forward(DType dt, const int32_t* pos, const void* x, void* xp, int64_t N,
                           int64_t K, int64_t C) override {
    cpu::moe::permute_forward(dt, pos, x, xp, N, K, C, threads_);
  }
  void moe_permute_backward(DType dt, const int32_t* pos, const void* dxp, void* dx, int64_t N,
                            int64_t K, int64_t C) override {
    cpu::moe::permute_backward(dt, pos, dxp, dx, N, K, C, threads_);
  }
  void moe_unpermute_forward(DType dt, const int32_t* pos, const float* w, const void* yp, void* y,
                             int64_t N, int64_t K, int64_t C) override {
    cpu::moe::unpermute_forward(dt, pos, w, yp, y, N, K, C, threads_);
  }
  void moe_unpermute_backward(DType dt, const int32_t* pos, const float* w, const void* yp,
                              const void* dy, void* dyp, float* dw, int64_t N, int64_t K,
                              int64_t C) override {
    cpu::moe::unpermute_backward(dt, pos, w, yp, dy, dyp, dw, N, K, C, threads_);
  }
  // Routing plans, statistics and the balance loss are O(N * E) bookkeeping
  // next to the expert GEMMs: the reference code serves.
  void moe_plan(const int32_t* idx, int64_t N, int64_t K, int64_t E, int64_t capacity, int32_t* pos,
                int64_t* offsets) override {
    ref::moe_plan(idx, N, K, E, capacity, pos, offsets);
  }
  void moe_route_stats(const MoeRouteArgs& a, const float* scores, const int32_t* idx,
                       const int32_t* plain_idx, const int32_t* pos, float* load,
                       double* stats) override {
    ref::moe_route_stats(a, scores, idx, plain_idx, pos, load, stats);
  }
  void moe_aux_loss(const MoeRouteArgs& a, int64_t T, float alpha, float grad_scale,
                    const float* scores, const int32_t* idx, float* dscores,
                    double* loss) override {
    ref::moe_aux_loss(a, T, alpha, grad_scale, scores, idx, dscores, loss);
  }
  void copy_rows(DType dt, const void* src, int64_t src_stride, void* dst, int64_t dst_stride,
                 int64_t rows, int64_t cols, bool accumulate) override {
    const size_t es = dtype_size(dt);
    const auto* s = static_cast<const char*>(src);
    auto* d = static_cast<char*>(dst);
    for (int64_t r = 0; r < rows; ++r) {
      const char* sr = s + size_t(r * src_stride) * es;
      char* dr = d + size_t(r * dst_stride) * es;
      if (accumulate)
        this->accumulate(dt, sr, dr, cols, 1.f);
      else
        std::memcpy(dr, sr, size_t(cols) * es);
    }
  }
  void mla_qkv_forward(const MlaArgs& a, const void* q, const void* kv, const void* kpe,
                       void* qkv) override {
    ref::mla_qkv_forward(a, q, kv, kpe, qkv);
  }
  void mla_qkv_backward(const MlaArgs& a, const void* g, const void* g_rope, void* dq, void* dkv,
                        void* dkpe) override {
    ref::mla_qkv_backward(a, g, g_rope, dq, dkv, dkpe);
  }
  void grouped_matmul_forward(const GroupedMatmulArgs& a, const void* x, const void* w,
                              void* y) override {
    cpu::moe::grouped_forward(a, x, w, y, threads_);
  }
  void grouped_matmul_backward(const GroupedMatmulArgs& a, const void* dy, const void* x,
                               const void* w, void* dx, float* dw) override {
    cpu::moe::grouped_backward(a, dy, x, w, dx, dw, threads_);
  }

 private:
  cpu::Level level_;
  const cpu::KernelTable& k_;
  int threads_;
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend() {
  return std::make_unique<CpuBackend>(cpu::detect_level());
}

std::unique_ptr<Backend> make_cpu_backend(std::string_view level) {
  cpu::Level l = cpu::parse_level(level);
  if (!cpu::level_available(l))
    fail("backend cpu: this CPU cannot run vector level '{}' (best here: {})", level,
         cpu::level_name(cpu::detect_level()));
  return std::make_unique<CpuBackend>(l);
}

}  // namespace keel::backend
