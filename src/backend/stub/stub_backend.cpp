// Every Backend virtual, each throwing until it is implemented. Because this
// file overrides every pure virtual it stops compiling when backend.h gains a
// kernel, so the template a porter copies is always complete.
#include "backend/stub/stub_backend.h"

#include "core/error.h"

namespace keel::backend {

namespace {

[[noreturn]] void missing(Kernel k) {
  fail<KernelError>("[{}] has no implementation on backend 'stub'", kernel_name(k));
}

class StubBackend final : public Backend {
 public:
  std::string_view name() const override { return "stub"; }
  std::string describe() const override { return "stub: no kernels (template for a new backend)"; }
  // A porter flips entries to true as kernels land, per (kernel, dtype).
  bool supports(Kernel, DType) const override { return false; }

  void matmul(const MatmulArgs&, const void*, const void*, void*) override {
    missing(Kernel::Matmul);
  }

  void embedding_forward(DType, const int32_t*, const void*, void*, int64_t, int64_t) override {
    missing(Kernel::Embedding);
  }
  void embedding_backward(DType, const int32_t*, const void*, float*, int64_t, int64_t) override {
    missing(Kernel::Embedding);
  }

  void layernorm_forward(DType, const void*, const void*, const void*, void*, float*, float*,
                         int64_t, int64_t, float) override {
    missing(Kernel::LayerNorm);
  }
  void layernorm_backward(DType, const void*, const void*, const void*, const float*, const float*,
                          void*, float*, float*, int64_t, int64_t) override {
    missing(Kernel::LayerNorm);
  }
  void rmsnorm_forward(DType, const void*, const void*, void*, float*, int64_t, int64_t,
                       float) override {
    missing(Kernel::RmsNorm);
  }
  void rmsnorm_backward(DType, const void*, const void*, const void*, const float*, void*, float*,
                        int64_t, int64_t) override {
    missing(Kernel::RmsNorm);
  }

  void rope_forward(const RopeArgs&, const void*, void*) override { missing(Kernel::Rope); }
  void rope_backward(const RopeArgs&, const void*, void*) override { missing(Kernel::Rope); }

  void attention_forward(const AttentionArgs&, const void*, const void*, const void*, void*,
                         float*) override {
    missing(Kernel::Attention);
  }
  void attention_backward(const AttentionArgs&, const void*, const void*, const void*, const void*,
                          const void*, const float*, void*, void*, void*) override {
    missing(Kernel::Attention);
  }

  void gelu_forward(DType, const void*, void*, int64_t) override { missing(Kernel::Gelu); }
  void gelu_backward(DType, const void*, const void*, void*, int64_t) override {
    missing(Kernel::Gelu);
  }
  void silu_forward(DType, const void*, void*, int64_t) override { missing(Kernel::Silu); }
  void silu_backward(DType, const void*, const void*, void*, int64_t) override {
    missing(Kernel::Silu);
  }
  void swiglu_forward(DType, const void*, const void*, void*, int64_t) override {
    missing(Kernel::SwiGlu);
  }
  void swiglu_backward(DType, const void*, const void*, const void*, void*, void*,
                       int64_t) override {
    missing(Kernel::SwiGlu);
  }

  void add(DType, const void*, const void*, void*, int64_t) override { missing(Kernel::Add); }
  void accumulate(DType, const void*, void*, int64_t, float) override { missing(Kernel::Add); }
  void bias_add(DType, void*, const void*, int64_t, int64_t) override { missing(Kernel::BiasAdd); }
  void bias_backward(DType, const void*, float*, int64_t, int64_t) override {
    missing(Kernel::BiasAdd);
  }

  void cross_entropy_forward(DType, const void*, const int32_t*, float*, float*, int64_t,
                             int64_t) override {
    missing(Kernel::CrossEntropy);
  }
  void cross_entropy_backward(DType, const void*, const int32_t*, const float*, const float*, void*,
                              int64_t, int64_t) override {
    missing(Kernel::CrossEntropy);
  }

  void adamw_update(const AdamWArgs&, float*, const float*, float*, float*, uint16_t*) override {
    missing(Kernel::AdamW);
  }

  void reduce_forward(ReduceOp, DType, const void*, float*, int64_t, int64_t) override {
    missing(Kernel::Reduce);
  }
  void reduce_backward(ReduceOp, DType, const void*, const float*, void*, int64_t,
                       int64_t) override {
    missing(Kernel::Reduce);
  }
  void sum_squares(DType, const void*, int64_t, double*) override { missing(Kernel::SumSquares); }

  void cast(DType, const void*, DType, void*, int64_t) override { missing(Kernel::Cast); }

  void quantize(DType, const float*, void*, float*, int64_t, int64_t) override {
    missing(Kernel::Quantize);
  }
  void dequantize(DType, const void*, const float*, float*, int64_t, int64_t) override {
    missing(Kernel::Quantize);
  }
  void qmatmul(DType, const float*, const void*, const float*, float*, int64_t, int64_t,
               int64_t) override {
    missing(Kernel::QMatmul);
  }

  void moe_route_forward(const MoeRouteArgs&, const float*, const float*, float*, int32_t*,
                         float*) override {
    missing(Kernel::MoeRoute);
  }
  void moe_route_backward(const MoeRouteArgs&, const float*, const int32_t*, const float*,
                          const float*, float*) override {
    missing(Kernel::MoeRoute);
  }
  void moe_permute_forward(DType, const int32_t*, const void*, void*, int64_t, int64_t,
                           int64_t) override {
    missing(Kernel::MoePermute);
  }
  void moe_permute_backward(DType, const int32_t*, const void*, void*, int64_t, int64_t,
                            int64_t) override {
    missing(Kernel::MoePermute);
  }
  void moe_unpermute_forward(DType, const int32_t*, const float*, const void*, void*, int64_t,
                             int64_t, int64_t) override {
    missing(Kernel::MoePermute);
  }
  void moe_unpermute_backward(DType, const int32_t*, const float*, const void*, const void*, void*,
                              float*, int64_t, int64_t, int64_t) override {
    missing(Kernel::MoePermute);
  }
  void moe_plan(const int32_t*, int64_t, int64_t, int64_t, int64_t, int32_t*, int64_t*) override {
    missing(Kernel::MoePermute);
  }
  void moe_route_stats(const MoeRouteArgs&, const float*, const int32_t*, const int32_t*,
                       const int32_t*, float*, double*) override {
    missing(Kernel::MoeRoute);
  }
  void moe_aux_loss(const MoeRouteArgs&, int64_t, float, float, const float*, const int32_t*,
                    float*, double*) override {
    missing(Kernel::MoeRoute);
  }
  void copy_rows(DType, const void*, int64_t, void*, int64_t, int64_t, int64_t, bool) override {
    missing(Kernel::CopyRows);
  }
  void mla_qkv_forward(const MlaArgs&, const void*, const void*, const void*, void*) override {
    missing(Kernel::MlaQkv);
  }
  void mla_qkv_backward(const MlaArgs&, const void*, const void*, void*, void*, void*) override {
    missing(Kernel::MlaQkv);
  }
  void grouped_matmul_forward(const GroupedMatmulArgs&, const void*, const void*, void*) override {
    missing(Kernel::GroupedMatmul);
  }
  void grouped_matmul_backward(const GroupedMatmulArgs&, const void*, const void*, const void*,
                               void*, float*) override {
    missing(Kernel::GroupedMatmul);
  }
};

}  // namespace

std::unique_ptr<Backend> make_stub_backend() {
  return std::make_unique<StubBackend>();
}

}  // namespace keel::backend
