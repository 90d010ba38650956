// Device addresses: allocate() hands out ranges of a private address space
// that starts at a non-canonical x86-64 address, so the host faults instead
// of reading garbage if it ever dereferences one, and every kernel argument
// resolves to (pool buffer, offset) through one map lookup. An address that
// resolves to nothing (a host pointer, a freed or overrun range) is a
// KernelError naming the kernel and the argument: the trap that keeps host
// assumptions from creeping back in.
#include "backend/vulkan/vk_backend.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "backend/vulkan/vk_context.h"
#include "backend/vulkan/vk_kernels.h"
#include "backend/vulkan/vk_memory_pool.h"
#include "backend/vulkan/vk_stream.h"
#include "core/error.h"

namespace keel::backend {

namespace {

using vulkan::Buffer;

constexpr uintptr_t kAddressBase = uintptr_t(0x4000'0000'0000'0000ull);
constexpr uintptr_t kAddressGap = 4096;  // one past the end never names the next range

int64_t dt_bytes(DType dt, int64_t n) {
  return int64_t(dtype_bytes(dt, size_t(n)));
}

// KEEL_VULKAN_MEMORY_MB caps the device memory keel takes (default: the
// largest device-local heap): to share a device, or to rehearse running out.
vulkan::ContextOptions options_from_environment() {
  vulkan::ContextOptions o;
  if (const char* mb = std::getenv("KEEL_VULKAN_MEMORY_MB"); mb && *mb) {
    char* end = nullptr;
    const unsigned long long v = std::strtoull(mb, &end, 10);
    if (*end || v == 0 || v > (1ull << 30))
      fail<ConfigError>("KEEL_VULKAN_MEMORY_MB: expected a positive number of MiB, got '{}'", mb);
    o.pool_budget = v << 20;
    o.pool_block = std::min<uint64_t>(o.pool_block, o.pool_budget);
  }
  return o;
}

class VulkanBackend final : public Backend {
 public:
  VulkanBackend() : ctx_(options_from_environment()) {
    if (const char* b = std::getenv("KEEL_FAULT_VULKAN_KERNEL")) broken_ = b;
  }
  ~VulkanBackend() override {
    try {
      ctx_.stream().synchronize();
    } catch (const std::exception& e) {
      // A destructor cannot throw; the context's teardown waits for the device.
      (void)e;
    }
    for (auto& [addr, a] : allocs_) ctx_.pool().free(a.buf);
    if (scratch_) ctx_.pool().free(scratch_);
    if (qscratch_) ctx_.pool().free(qscratch_);
  }

  std::string_view name() const override { return "vulkan"; }
  std::string describe() const override {
    return "vulkan: " + vulkan::describe_device(ctx_.info()) +
           (broken_.empty() ? "" : " (fault injected into " + broken_ + ")");
  }
  bool supports(Kernel k, DType dt) const override {
    if (k == Kernel::Quantize || k == Kernel::QMatmul)
      return ctx_.info().storage_8bit && ctx_.info().float64 &&
             (dt == DType::I8 || dt == DType::Q8_0 || dt == DType::Q4_0);
    if (dt != DType::F32 && dt != DType::BF16) return false;
    switch (k) {
      case Kernel::Matmul:
      case Kernel::Add:
      case Kernel::Gelu:
      case Kernel::Silu:
      case Kernel::SwiGlu:
      case Kernel::Cast:
      case Kernel::Embedding:
      case Kernel::RmsNorm:
      case Kernel::BiasAdd:
      case Kernel::LayerNorm:
      case Kernel::Rope:
      case Kernel::Attention:
      case Kernel::CrossEntropy:
      case Kernel::Reduce:
        return true;
      case Kernel::MoePermute:
      case Kernel::GroupedMatmul:
      case Kernel::CopyRows:
      case Kernel::MlaQkv:
        return true;
      case Kernel::AdamW:
        return dt == DType::F32;
      case Kernel::MoeRoute:  // its statistics and balance loss sum in f64
        return dt == DType::F32 && ctx_.info().float64;
      case Kernel::SumSquares:
        return ctx_.info().float64;
      default:
        return false;
    }
  }

  // ---- memory and queue
  bool host_memory() const override { return false; }
  void* allocate(size_t bytes, std::string_view what) override {
    Buffer b;
    try {
      b = ctx_.pool().alloc(std::max<uint64_t>(bytes, 1));
    } catch (const Error& e) {
      fail("vulkan: cannot allocate {} ({} bytes): {}", what.empty() ? "a buffer" : what, bytes,
           e.what());
    }
    const uintptr_t addr = next_;
    next_ += (b.size + kAddressGap - 1) / kAddressGap * kAddressGap + kAddressGap;
    allocs_[addr] = {b, bytes};
    // Zeroed, as the interface promises (pool ranges are reused).
    ctx_.stream().fill_zero(b);
    return reinterpret_cast<void*>(addr);
  }
  void release(void* p) override {
    auto it = allocs_.find(reinterpret_cast<uintptr_t>(p));
    if (it == allocs_.end())
      fail<KernelError>("vulkan: release of {} which allocate() did not return", p);
    ctx_.stream().synchronize();  // kernels in flight may still use the range
    ctx_.pool().free(it->second.buf);
    allocs_.erase(it);
  }
  void upload(void* dst, const void* src, size_t bytes) override {
    if (!bytes) return;
    const Buffer b = at(dst, bytes, "upload", "destination");
    ctx_.stream().upload(b, src, bytes);
    stats_.bytes_to_device += bytes;
  }
  void download(void* dst, const void* src, size_t bytes) override {
    if (!bytes) return;
    const Buffer b = at(src, bytes, "download", "source");
    ctx_.stream().download(b, dst, bytes);
    stats_.bytes_to_host += bytes;
  }
  void copy(void* dst, const void* src, size_t bytes) override {
    if (!bytes) return;
    ctx_.stream().copy(at(src, bytes, "copy", "source"), at(dst, bytes, "copy", "destination"),
                       bytes);
  }
  void fill_zero(void* dst, size_t bytes) override {
    if (!bytes) return;
    const Buffer b = at(dst, int64_t(bytes), "fill_zero", "destination");
    if (b.offset % 4 == 0 && bytes % 4 == 0) {
      ctx_.stream().fill_zero(b);
      return;
    }
    // vkCmdFillBuffer writes whole aligned words; other ranges come from the host.
    const std::vector<uint8_t> zeros(bytes, 0);
    upload(dst, zeros.data(), bytes);
  }
  void synchronize() override { ctx_.stream().synchronize(); }
  TransferStats transfer_stats() const override {
    TransferStats s = stats_;
    s.syncs = ctx_.stream().submits();
    return s;
  }

  // ---- kernels
  void matmul(const MatmulArgs& a, const void* A, const void* B, void* C) override {
    if (a.M == 0 || a.N == 0 || a.batch == 0) return;
    const int64_t rows_a = a.trans_a ? a.K : a.M, rows_b = a.trans_b ? a.N : a.K;
    // The extents the kernel may touch: (batch - 1) strides plus one matrix.
    const int64_t na = (a.batch - 1) * a.stride_a + (rows_a - 1) * a.lda + (a.trans_a ? a.M : a.K);
    const int64_t nb = (a.batch - 1) * a.stride_b + (rows_b - 1) * a.ldb + (a.trans_b ? a.K : a.N);
    const int64_t nc = (a.batch - 1) * a.stride_c + (a.M - 1) * a.ldc + a.N;
    vulkan::matmul(ctx_, a, at(A, dt_bytes(a.a_dtype, std::max<int64_t>(na, 1)), "matmul", "A"),
                   at(B, dt_bytes(a.b_dtype, std::max<int64_t>(nb, 1)), "matmul", "B"),
                   at(C, dt_bytes(a.c_dtype, nc), "matmul", "C"));
  }

  void add(DType dt, const void* a, const void* b, void* y, int64_t n) override {
    if (n == 0) return;
    const int64_t bytes = dt_bytes(dt, n);
    // The injected fault leaves the last element unwritten: the conformance
    // check must see exactly the add row fail.
    const int64_t m = broken_ == "add" && n > 1 ? n - 1 : n;
    vulkan::add(ctx_, dt, at(a, bytes, "add", "a"), at(b, bytes, "add", "b"),
                at(y, bytes, "add", "y"), m);
  }
  void accumulate(DType dt, const void* x, void* y, int64_t n, float alpha) override {
    if (n == 0) return;
    const int64_t bytes = dt_bytes(dt, n);
    vulkan::accumulate(ctx_, dt, at(x, bytes, "accumulate", "x"), at(y, bytes, "accumulate", "y"),
                       n, alpha);
  }

  void gelu_forward(DType dt, const void* x, void* y, int64_t n) override {
    act_fwd(vulkan::Activation::Gelu, "gelu", dt, x, y, n);
  }
  void gelu_backward(DType dt, const void* x, const void* dy, void* dx, int64_t n) override {
    act_bwd(vulkan::Activation::Gelu, "gelu", dt, x, dy, dx, n);
  }
  void silu_forward(DType dt, const void* x, void* y, int64_t n) override {
    act_fwd(vulkan::Activation::Silu, "silu", dt, x, y, n);
  }
  void silu_backward(DType dt, const void* x, const void* dy, void* dx, int64_t n) override {
    act_bwd(vulkan::Activation::Silu, "silu", dt, x, dy, dx, n);
  }
  void swiglu_forward(DType dt, const void* gate, const void* up, void* y, int64_t n) override {
    if (n == 0) return;
    const int64_t b = dt_bytes(dt, n);
    vulkan::swiglu_forward(ctx_, dt, at(gate, b, "swiglu", "gate"), at(up, b, "swiglu", "up"),
                           at(y, b, "swiglu", "y"), n);
  }
  void swiglu_backward(DType dt, const void* gate, const void* up, const void* dy, void* dgate,
                       void* dup, int64_t n) override {
    if (n == 0) return;
    const int64_t b = dt_bytes(dt, n);
    vulkan::swiglu_backward(ctx_, dt, at(gate, b, "swiglu", "gate"), at(up, b, "swiglu", "up"),
                            at(dy, b, "swiglu", "dy"), at(dgate, b, "swiglu", "dgate"),
                            at(dup, b, "swiglu", "dup"), n);
  }

  void embedding_forward(DType dt, const int32_t* ids, const void* table, void* out, int64_t n,
                         int64_t C) override {
    if (n == 0 || C == 0) return;
    // The table's extent is unknown here (ids index it): its whole allocation.
    vulkan::embedding_forward(ctx_, dt, at(ids, 4 * n, "embedding", "ids"),
                              whole(table, "embedding", "table"),
                              at(out, dt_bytes(dt, n * C), "embedding", "out"), n, C);
  }
  void embedding_backward(DType dt, const int32_t* ids, const void* dout, float* dtable, int64_t n,
                          int64_t C) override {
    if (n == 0 || C == 0) return;
    vulkan::embedding_backward(ctx_, dt, at(ids, 4 * n, "embedding", "ids"),
                               at(dout, dt_bytes(dt, n * C), "embedding", "dout"),
                               whole(dtable, "embedding", "dtable"), n, C);
  }

  void rmsnorm_forward(DType dt, const void* x, const void* w, void* y, float* rstd, int64_t N,
                       int64_t C, float eps) override {
    if (N == 0) return;
    const int64_t b = dt_bytes(dt, N * C);
    vulkan::rmsnorm_forward(ctx_, dt, at(x, b, "rmsnorm", "x"),
                            at(w, dt_bytes(dt, C), "rmsnorm", "w"), at(y, b, "rmsnorm", "y"),
                            at(rstd, 4 * N, "rmsnorm", "rstd"), N, C, eps);
  }
  void rmsnorm_backward(DType dt, const void* dy, const void* x, const void* w, const float* rstd,
                        void* dx, float* dw, int64_t N, int64_t C) override {
    if (N == 0 || C == 0) return;
    const int64_t b = dt_bytes(dt, N * C);
    vulkan::rmsnorm_backward(ctx_, dt, at(dy, b, "rmsnorm", "dy"), at(x, b, "rmsnorm", "x"),
                             at(w, dt_bytes(dt, C), "rmsnorm", "w"),
                             at(rstd, 4 * N, "rmsnorm", "rstd"), at(dx, b, "rmsnorm", "dx"),
                             at(dw, 4 * C, "rmsnorm", "dw"), N, C);
  }

  void bias_add(DType dt, void* y, const void* bias, int64_t N, int64_t C) override {
    if (N == 0 || C == 0) return;
    vulkan::bias_add(ctx_, dt, at(y, dt_bytes(dt, N * C), "bias_add", "y"),
                     at(bias, dt_bytes(dt, C), "bias_add", "bias"), N, C);
  }
  void bias_backward(DType dt, const void* dy, float* dbias, int64_t N, int64_t C) override {
    if (N == 0 || C == 0) return;
    vulkan::bias_backward(ctx_, dt, at(dy, dt_bytes(dt, N * C), "bias_add", "dy"),
                          at(dbias, 4 * C, "bias_add", "dbias"), N, C);
  }

  void layernorm_forward(DType dt, const void* x, const void* w, const void* b, void* y,
                         float* mean, float* rstd, int64_t N, int64_t C, float eps) override {
    if (N == 0) return;
    const int64_t nb = dt_bytes(dt, N * C), cb = dt_bytes(dt, C);
    const Buffer bx = at(x, nb, "layernorm", "x");
    vulkan::layernorm_forward(ctx_, dt, bx, at(w, cb, "layernorm", "w"),
                              b ? at(b, cb, "layernorm", "b") : bx, b != nullptr,
                              at(y, nb, "layernorm", "y"), at(mean, 4 * N, "layernorm", "mean"),
                              at(rstd, 4 * N, "layernorm", "rstd"), N, C, eps);
  }
  void layernorm_backward(DType dt, const void* dy, const void* x, const void* w, const float* mean,
                          const float* rstd, void* dx, float* dw, float* db, int64_t N,
                          int64_t C) override {
    if (N == 0 || C == 0) return;
    const int64_t nb = dt_bytes(dt, N * C);
    const Buffer bdw = at(dw, 4 * C, "layernorm", "dw");
    vulkan::layernorm_backward(
        ctx_, dt, at(dy, nb, "layernorm", "dy"), at(x, nb, "layernorm", "x"),
        at(w, dt_bytes(dt, C), "layernorm", "w"), at(mean, 4 * N, "layernorm", "mean"),
        at(rstd, 4 * N, "layernorm", "rstd"), at(dx, nb, "layernorm", "dx"), bdw,
        db ? at(db, 4 * C, "layernorm", "db") : bdw, db != nullptr, N, C);
  }

  void rope_forward(const RopeArgs& a, const void* x, void* y) override { rope(a, x, y, false); }
  void rope_backward(const RopeArgs& a, const void* dy, void* dx) override {
    rope(a, dy, dx, true);
  }

  void attention_forward(const AttentionArgs& a, const void* q, const void* k, const void* v,
                         void* o, float* lse) override {
    if (a.B == 0 || a.Tq == 0 || a.NH == 0) return;
    const Extents e = extents(a);
    vulkan::attention_forward(ctx_, a, at(q, e.q, "attention", "q"), at(k, e.kv, "attention", "k"),
                              at(v, e.kv, "attention", "v"), at(o, e.o, "attention", "o"),
                              at(lse, e.lse, "attention", "lse"));
  }
  void attention_backward(const AttentionArgs& a, const void* dout, const void* q, const void* k,
                          const void* v, const void* o, const float* lse, void* dq, void* dk,
                          void* dv) override {
    if (a.B == 0 || a.Tq == 0 || a.NH == 0) return;
    const Extents e = extents(a);
    vulkan::attention_backward(ctx_, a, at(dout, e.o, "attention", "dout"),
                               at(q, e.q, "attention", "q"), at(k, e.kv, "attention", "k"),
                               at(v, e.kv, "attention", "v"), at(o, e.o, "attention", "o"),
                               at(lse, e.lse, "attention", "lse"), at(dq, e.q, "attention", "dq"),
                               at(dk, e.kv, "attention", "dk"), at(dv, e.kv, "attention", "dv"));
  }

  void cross_entropy_forward(DType dt, const void* logits, const int32_t* targets, float* losses,
                             float* lse, int64_t N, int64_t V) override {
    if (N == 0) return;
    vulkan::cross_entropy_forward(
        ctx_, dt, at(logits, dt_bytes(dt, N * V), "cross_entropy", "logits"),
        at(targets, 4 * N, "cross_entropy", "targets"),
        at(losses, 4 * N, "cross_entropy", "losses"), at(lse, 4 * N, "cross_entropy", "lse"), N, V);
  }
  void cross_entropy_backward(DType dt, const void* logits, const int32_t* targets,
                              const float* lse, const float* dloss, void* dlogits, int64_t N,
                              int64_t V) override {
    if (N == 0) return;
    const int64_t nb = dt_bytes(dt, N * V);
    vulkan::cross_entropy_backward(ctx_, dt, at(logits, nb, "cross_entropy", "logits"),
                                   at(targets, 4 * N, "cross_entropy", "targets"),
                                   at(lse, 4 * N, "cross_entropy", "lse"),
                                   at(dloss, 4 * N, "cross_entropy", "dloss"),
                                   at(dlogits, nb, "cross_entropy", "dlogits"), N, V);
  }

  void adamw_update(const AdamWArgs& a, float* param, const float* grad, float* m, float* v,
                    uint16_t* param_bf16) override {
    if (a.n == 0) return;
    const int64_t b = 4 * a.n;
    Buffer b16;
    if (param_bf16) b16 = at(param_bf16, 2 * a.n, "adamw", "param_bf16");
    vulkan::adamw(ctx_, a, at(param, b, "adamw", "param"), at(grad, b, "adamw", "grad"),
                  at(m, b, "adamw", "m"), at(v, b, "adamw", "v"), param_bf16 ? &b16 : nullptr);
  }

  void reduce_forward(ReduceOp op, DType dt, const void* x, float* y, int64_t N,
                      int64_t C) override {
    if (N == 0) return;
    const Buffer bx = at(x, dt_bytes(dt, std::max<int64_t>(N * C, 1)), "reduce", "x");
    vulkan::reduce(ctx_, op, dt, bx, at(y, 4 * N, "reduce", "y"), bx, N, C, false);
  }
  void reduce_backward(ReduceOp op, DType dt, const void* x, const float* dy, void* dx, int64_t N,
                       int64_t C) override {
    if (N == 0 || C == 0) return;
    const int64_t nb = dt_bytes(dt, N * C);
    vulkan::reduce(ctx_, op, dt, at(x, nb, "reduce", "x"), at(dy, 4 * N, "reduce", "dy"),
                   at(dx, nb, "reduce", "dx"), N, C, true);
  }

  void quantize(DType qdt, const float* w, void* q, float* scale, int64_t N, int64_t K) override {
    if (N == 0 || K == 0) return;
    const Buffer bw = at(w, 4 * N * K, "quantize", "w");
    vulkan::quantize(ctx_, qdt, bw, at(q, dt_bytes(qdt, N * K), "quantize", "q"),
                     scale ? at(scale, 4 * N, "quantize", "scale") : bw, N, K);
  }
  void dequantize(DType qdt, const void* q, const float* scale, float* w, int64_t N,
                  int64_t K) override {
    if (N == 0 || K == 0) return;
    const Buffer bw = at(w, 4 * N * K, "dequantize", "w");
    vulkan::dequantize(ctx_, qdt, at(q, dt_bytes(qdt, N * K), "dequantize", "q"),
                       scale ? at(scale, 4 * N, "dequantize", "scale") : bw, bw, N, K);
  }
  void qmatmul(DType qdt, const float* x, const void* wq, const float* wscale, float* y, int64_t M,
               int64_t N, int64_t K) override {
    if (M == 0 || N == 0) return;
    const uint64_t need = vulkan::qmatmul_scratch_bytes(qdt, M, K);
    if (qscratch_.size < need) {
      ctx_.stream().synchronize();  // the old range may still be read
      if (qscratch_) ctx_.pool().free(qscratch_);
      qscratch_ = ctx_.pool().alloc(need);
    }
    Buffer xq = qscratch_, xs = qscratch_;
    if (qdt == DType::I8) {
      xq.size = uint64_t(M * K);
      xs.offset += (uint64_t(M * K) + 3) / 4 * 4;
      xs.size = 4 * uint64_t(M);
    }
    const Buffer by = at(y, 4 * M * N, "qmatmul", "y");
    vulkan::qmatmul(ctx_, qdt, at(x, 4 * M * K, "qmatmul", "x"),
                    at(wq, dt_bytes(qdt, N * K), "qmatmul", "wq"),
                    wscale ? at(wscale, 4 * N, "qmatmul", "wscale") : by, by, xq, xs, M, N, K);
  }

  void moe_route_forward(const MoeRouteArgs& a, const float* logits, const float* bias,
                         float* scores, int32_t* idx, float* w) override {
    if (a.N == 0) return;
    const int64_t ne = 4 * a.N * a.E, nk = 4 * a.N * a.K;
    const Buffer bl = at(logits, ne, "moe_route", "logits");
    vulkan::moe_route_forward(ctx_, a, bl, bias ? at(bias, 4 * a.E, "moe_route", "bias") : bl,
                              bias != nullptr, at(scores, ne, "moe_route", "scores"),
                              at(idx, nk, "moe_route", "idx"), at(w, nk, "moe_route", "w"));
  }
  void moe_route_backward(const MoeRouteArgs& a, const float* scores, const int32_t* idx,
                          const float* dw, const float* dscores, float* dlogits) override {
    if (a.N == 0) return;
    const int64_t ne = 4 * a.N * a.E, nk = 4 * a.N * a.K;
    const Buffer bs = at(scores, ne, "moe_route", "scores");
    vulkan::moe_route_backward(ctx_, a, bs, at(idx, nk, "moe_route", "idx"),
                               at(dw, nk, "moe_route", "dw"),
                               dscores ? at(dscores, ne, "moe_route", "dscores") : bs,
                               dscores != nullptr, at(dlogits, ne, "moe_route", "dlogits"));
  }
  // The permuted buffers' rows are named by pos (data): their whole allocations.
  void moe_permute_forward(DType dt, const int32_t* pos, const void* x, void* xp, int64_t N,
                           int64_t K, int64_t C) override {
    if (N == 0 || K == 0 || C == 0) return;
    const Buffer bp = at(pos, 4 * N * K, "moe_permute", "pos");
    const Buffer bx = at(x, dt_bytes(dt, N * C), "moe_permute", "x");
    vulkan::moe_permute(ctx_, 0, dt, bp, bp, bx, bx, whole(xp, "moe_permute", "xp"), bp, N, K, C);
  }
  void moe_permute_backward(DType dt, const int32_t* pos, const void* dxp, void* dx, int64_t N,
                            int64_t K, int64_t C) override {
    if (N == 0 || K == 0 || C == 0) return;
    const Buffer bp = at(pos, 4 * N * K, "moe_permute", "pos");
    const Buffer bdxp = whole(dxp, "moe_permute", "dxp");
    vulkan::moe_permute(ctx_, 1, dt, bp, bp, bdxp, bdxp,
                        at(dx, dt_bytes(dt, N * C), "moe_permute", "dx"), bp, N, K, C);
  }
  void moe_unpermute_forward(DType dt, const int32_t* pos, const float* w, const void* yp, void* y,
                             int64_t N, int64_t K, int64_t C) override {
    if (N == 0 || K == 0 || C == 0) return;
    const Buffer bp = at(pos, 4 * N * K, "moe_unpermute", "pos");
    const Buffer byp = whole(yp, "moe_unpermute", "yp");
    vulkan::moe_permute(ctx_, 2, dt, bp, at(w, 4 * N * K, "moe_unpermute", "w"), byp, byp,
                        at(y, dt_bytes(dt, N * C), "moe_unpermute", "y"), bp, N, K, C);
  }
  void moe_unpermute_backward(DType dt, const int32_t* pos, const float* w, const void* yp,
                              const void* dy, void* dyp, float* dw, int64_t N, int64_t K,
                              int64_t C) override {
    if (N == 0 || K == 0 || C == 0) return;
    const Buffer bp = at(pos, 4 * N * K, "moe_unpermute", "pos");
    const Buffer bw = at(w, 4 * N * K, "moe_unpermute", "w");
    const Buffer byp = whole(yp, "moe_unpermute", "yp");
    const Buffer bdy = at(dy, dt_bytes(dt, N * C), "moe_unpermute", "dy");
    const Buffer bdw = at(dw, 4 * N * K, "moe_unpermute", "dw");
    // dw first: it reads yp, which dyp may share memory with in no case, but
    // the order is fixed either way.
    vulkan::moe_permute(ctx_, 4, dt, bp, bw, byp, bdy, byp, bdw, N, K, C);
    vulkan::moe_permute(ctx_, 3, dt, bp, bw, byp, bdy, whole(dyp, "moe_unpermute", "dyp"), bdw, N,
                        K, C);
  }
  void moe_plan(const int32_t* idx, int64_t N, int64_t K, int64_t E, int64_t capacity, int32_t* pos,
                int64_t* offsets) override {
    const Buffer bo = at(offsets, 8 * (E + 1), "moe_plan", "offsets");
    if (N * K == 0) {
      ctx_.stream().fill_zero(bo);
      return;
    }
    vulkan::moe_plan(ctx_, at(idx, 4 * N * K, "moe_plan", "idx"), N, K, E, capacity,
                     at(pos, 4 * N * K, "moe_plan", "pos"), bo);
  }
  void moe_route_stats(const MoeRouteArgs& a, const float* scores, const int32_t* idx,
                       const int32_t* plain_idx, const int32_t* pos, float* load,
                       double* stats) override {
    if (a.N == 0) return;
    const int64_t nk = 4 * a.N * a.K;
    vulkan::moe_route_stats(
        ctx_, a, at(scores, 4 * a.N * a.E, "moe_route_stats", "scores"),
        at(idx, nk, "moe_route_stats", "idx"), at(plain_idx, nk, "moe_route_stats", "plain_idx"),
        at(pos, nk, "moe_route_stats", "pos"), at(load, 16 * a.E, "moe_route_stats", "load"),
        at(stats, 16, "moe_route_stats", "stats"));
  }
  void moe_aux_loss(const MoeRouteArgs& a, int64_t T, float alpha, float grad_scale,
                    const float* scores, const int32_t* idx, float* dscores,
                    double* loss) override {
    if (a.N == 0) return;
    const int64_t ne = 4 * a.N * a.E;
    vulkan::moe_aux_loss(ctx_, a, T, alpha, grad_scale, at(scores, ne, "moe_aux_loss", "scores"),
                         at(idx, 4 * a.N * a.K, "moe_aux_loss", "idx"),
                         at(dscores, ne, "moe_aux_loss", "dscores"),
                         at(loss, 8, "moe_aux_loss", "loss"));
  }
  void copy_rows(DType dt, const void* src, int64_t src_stride, void* dst, int64_t dst_stride,
                 int64_t rows, int64_t cols, bool accumulate) override {
    if (rows == 0 || cols == 0) return;
    vulkan::copy_rows(
        ctx_, dt, at(src, dt_bytes(dt, (rows - 1) * src_stride + cols), "copy_rows", "src"),
        src_stride, at(dst, dt_bytes(dt, (rows - 1) * dst_stride + cols), "copy_rows", "dst"),
        dst_stride, rows, cols, accumulate);
  }
  void mla_qkv_forward(const MlaArgs& a, const void* q, const void* kv, const void* kpe,
                       void* qkv) override {
    if (a.N == 0 || a.NH == 0) return;
    const int64_t D = a.D();
    vulkan::mla_qkv_forward(ctx_, a, at(q, dt_bytes(a.dt, a.N * a.NH * D), "mla_qkv", "q"),
                            at(kv, dt_bytes(a.dt, a.N * a.NH * (a.nope + a.v)), "mla_qkv", "kv"),
                            at(kpe, dt_bytes(a.dt, a.N * a.rope), "mla_qkv", "kpe"),
                            at(qkv, dt_bytes(a.dt, a.N * 3 * a.NH * D), "mla_qkv", "qkv"));
  }
  void mla_qkv_backward(const MlaArgs& a, const void* g, const void* g_rope, void* dq, void* dkv,
                        void* dkpe) override {
    if (a.N == 0 || a.NH == 0) return;
    const int64_t D = a.D(), row = dt_bytes(a.dt, a.N * 3 * a.NH * D);
    vulkan::mla_qkv_backward(ctx_, a, at(g, row, "mla_qkv", "g"),
                             at(g_rope, row, "mla_qkv", "g_rope"),
                             at(dq, dt_bytes(a.dt, a.N * a.NH * D), "mla_qkv", "dq"),
                             at(dkv, dt_bytes(a.dt, a.N * a.NH * (a.nope + a.v)), "mla_qkv", "dkv"),
                             at(dkpe, dt_bytes(a.dt, a.N * a.rope), "mla_qkv", "dkpe"));
  }
  // Group extents are in device memory (offsets): x, y and their gradients
  // are bound to the end of their allocations and the shader reads R itself.
  void grouped_matmul_forward(const GroupedMatmulArgs& a, const void* x, const void* w,
                              void* y) override {
    if (a.G == 0 || a.N == 0 || a.K == 0) return;
    const Buffer bx = whole(x, "grouped_matmul", "x"), by = whole(y, "grouped_matmul", "y");
    const Buffer bw = at(w, dt_bytes(a.dt, a.G * a.N * a.K), "grouped_matmul", "w");
    const Buffer bo = at(a.offsets, 8 * (a.G + 1), "grouped_matmul", "offsets");
    vulkan::grouped_matmul(ctx_, 0, a, bo, bx, bw, by, by, bo, rows_bound(a, bx.size, by.size));
  }
  void grouped_matmul_backward(const GroupedMatmulArgs& a, const void* dy, const void* x,
                               const void* w, void* dx, float* dw) override {
    if (a.G == 0 || a.N == 0 || a.K == 0) return;
    const Buffer bx = whole(x, "grouped_matmul", "x"), bdy = whole(dy, "grouped_matmul", "dy");
    const Buffer bw = at(w, dt_bytes(a.dt, a.G * a.N * a.K), "grouped_matmul", "w");
    const Buffer bo = at(a.offsets, 8 * (a.G + 1), "grouped_matmul", "offsets");
    const int64_t rows = rows_bound(a, bx.size, bdy.size);
    if (dx)
      vulkan::grouped_matmul(ctx_, 1, a, bo, bx, bw, bdy, whole(dx, "grouped_matmul", "dx"), bo,
                             rows);
    if (dw)
      vulkan::grouped_matmul(ctx_, 2, a, bo, bx, bw, bdy, bdy,
                             at(dw, 4 * a.G * a.N * a.K, "grouped_matmul", "dw"), rows);
  }

  void sum_squares(DType dt, const void* x, int64_t n, double* out) override {
    const Buffer o = at(out, 8, "sum_squares", "out");
    const uint64_t pbytes = uint64_t(vulkan::sum_squares_partials(n)) * 8;
    if (scratch_.size < pbytes) {
      ctx_.stream().synchronize();
      if (scratch_) ctx_.pool().free(scratch_);
      scratch_ = ctx_.pool().alloc(pbytes);
    }
    if (n == 0) {
      // Nothing to read: the partial pass still writes a zero and the reduce
      // pass adds it, so bind x as a 1-element range of the scratch.
      vulkan::sum_squares(ctx_, DType::F32, scratch_, 0, scratch_, o);
      return;
    }
    vulkan::sum_squares(ctx_, dt, at(x, dt_bytes(dt, n), "sum_squares", "x"), n, scratch_, o);
  }

  void cast(DType src_dt, const void* src, DType dst_dt, void* dst, int64_t n) override {
    if (n == 0) return;
    vulkan::cast(ctx_, src_dt, at(src, dt_bytes(src_dt, n), "cast", "src"), dst_dt,
                 at(dst, dt_bytes(dst_dt, n), "cast", "dst"), n);
  }

 private:
  struct Allocation {
    Buffer buf;
    uint64_t bytes = 0;
  };

  // The pool range behind [p, p + bytes), narrowed to exactly those bytes.
  Buffer at(const void* p, int64_t bytes, const char* kernel, const char* arg) const {
    const auto addr = reinterpret_cast<uintptr_t>(p);
    auto it = allocs_.upper_bound(addr);
    if (it == allocs_.begin() ||
        addr - std::prev(it)->first + uint64_t(bytes) > std::prev(it)->second.bytes) {
      fail<KernelError>("vulkan {}: argument '{}' ({} bytes at {}) is not memory of this backend{}",
                        kernel, arg, bytes, p,
                        addr < kAddressBase
                            ? " (a host pointer: device memory comes from allocate())"
                            : " (freed, or past the end of its allocation)");
    }
    --it;
    Buffer b = it->second.buf;
    b.offset += addr - it->first;
    b.size = uint64_t(bytes);
    return b;
  }

  // At most this many rows fit both x (K wide) and y (N wide): enough
  // threads for any R the offsets name (the shader reads R itself).
  static int64_t rows_bound(const GroupedMatmulArgs& a, uint64_t x_bytes, uint64_t y_bytes) {
    return std::min<int64_t>(int64_t(x_bytes) / dt_bytes(a.dt, a.K),
                             int64_t(y_bytes) / dt_bytes(a.dt, a.N));
  }

  // Bytes each attention argument spans, from backend.h's layout rules.
  struct Extents {
    int64_t q, kv, o, lse;
  };
  static Extents extents(const AttentionArgs& a) {
    const int64_t q = (a.B - 1) * a.q_batch_stride + (a.Tq - 1) * a.q_row_stride + a.NH * a.HS;
    const int64_t kv = (a.B - 1) * a.kv_batch_stride + (a.Tk - 1) * a.kv_row_stride + a.NKV * a.HS;
    return {dt_bytes(a.dt, q), dt_bytes(a.dt, kv), dt_bytes(a.dt, a.B * a.Tq * a.NH * a.HS),
            4 * a.B * a.NH * a.Tq};
  }

  void rope(const RopeArgs& a, const void* x, void* y, bool backward) {
    if (a.B == 0 || a.T == 0 || a.NH == 0 || a.HS < 2) return;
    const int64_t n = (a.B - 1) * a.batch_stride + (a.T - 1) * a.row_stride + a.NH * a.HS;
    const int64_t b = dt_bytes(a.dt, n);
    vulkan::rope(ctx_, a, freq_table(a.theta, a.HS), at(x, b, "rope", backward ? "dy" : "x"),
                 at(y, b, "rope", backward ? "dx" : "y"), backward);
  }
  // theta^(-2i/HS) for i < HS/2 in f64, formed on the host as the oracle
  // does and kept on the device per (theta, HS): one upload per shape.
  Buffer freq_table(float theta, int64_t HS) {
    const auto key = std::make_pair(theta, HS);
    auto it = freq_.find(key);
    if (it == freq_.end()) {
      std::vector<double> f(size_t(HS / 2));
      for (size_t i = 0; i < f.size(); ++i)
        f[i] = std::pow(double(theta), -2.0 * double(i) / double(HS));
      void* d = allocate(f.size() * sizeof(double), "rope frequencies");
      upload(d, f.data(), f.size() * sizeof(double));
      it = freq_.emplace(key, d).first;
    }
    return at(it->second, int64_t(HS / 2) * 8, "rope", "frequencies");
  }

  // From p to the end of its allocation (for arguments indexed by data).
  Buffer whole(const void* p, const char* kernel, const char* arg) const {
    const auto addr = reinterpret_cast<uintptr_t>(p);
    auto it = allocs_.upper_bound(addr);
    if (it == allocs_.begin()) (void)at(p, 1, kernel, arg);  // throws, naming the argument
    --it;
    if (addr - it->first >= it->second.bytes) (void)at(p, 1, kernel, arg);
    return at(p, int64_t(it->second.bytes - (addr - it->first)), kernel, arg);
  }

  void act_fwd(vulkan::Activation f, const char* k, DType dt, const void* x, void* y, int64_t n) {
    if (n == 0) return;
    const int64_t b = dt_bytes(dt, n);
    vulkan::activation_forward(ctx_, f, dt, at(x, b, k, "x"), at(y, b, k, "y"), n);
  }
  void act_bwd(vulkan::Activation f, const char* k, DType dt, const void* x, const void* dy,
               void* dx, int64_t n) {
    if (n == 0) return;
    const int64_t b = dt_bytes(dt, n);
    vulkan::activation_backward(ctx_, f, dt, at(x, b, k, "x"), at(dy, b, k, "dy"),
                                at(dx, b, k, "dx"), n);
  }

  mutable vulkan::Context ctx_;
  std::map<uintptr_t, Allocation> allocs_;
  uintptr_t next_ = kAddressBase;
  Buffer scratch_;                                   // sum_squares partials, grown on demand
  Buffer qscratch_;                                  // qmatmul's quantized x, grown on demand
  std::map<std::pair<float, int64_t>, void*> freq_;  // rope tables by (theta, HS)
  TransferStats stats_;
  std::string broken_;  // KEEL_FAULT_VULKAN_KERNEL: the kernel given a wrong answer
};

}  // namespace

std::unique_ptr<Backend> make_vulkan_backend() {
  return std::make_unique<VulkanBackend>();
}

}  // namespace keel::backend
