// The kernel interface: every piece of math keel runs goes through a Backend.
// Kernels take raw buffers plus explicit sizes and trust their inputs; shape
// and dtype validation happens once, in backend/ops.h. A new accelerator is a
// new subclass that passes `keel verify kernels` against the `ref` backend.
//
// Conventions (all kernels):
//  - `dt` is the activation dtype, F32 or BF16 (F16 where supports() says so).
//    Statistics saved for backward (mean, rstd, lse) are always F32.
//    Parameter gradients (dw, db, dtable) are always F32.
//  - Backward kernels ACCUMULATE into every gradient output (dx += ...), so
//    residual branches, tied weights and micro-batches need no extra adds.
//  - Results must not depend on thread count or timing: reductions run over
//    fixed-size chunks combined in a fixed order.
//  - Every pointer a kernel takes is a device address: memory this backend
//    allocated (allocate()), or for host-memory backends (ref, cpu) any host
//    memory. A device backend's addresses are opaque (a handle and an offset
//    in its own address space): the host never dereferences them and moves
//    bytes only through upload/download. Kernels are enqueued in order on the
//    backend's queue; synchronize() waits for all of them.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"
#include "core/rng.h"

namespace keel::backend {

// Every kernel family, for supports(), conformance tables and error messages.
enum class Kernel : uint8_t {
  Matmul,
  Embedding,
  LayerNorm,
  RmsNorm,
  Rope,
  Attention,
  Gelu,
  Silu,
  SwiGlu,
  Add,
  BiasAdd,
  CrossEntropy,
  AdamW,
  Reduce,
  SumSquares,
  Cast,
  Quantize,
  QMatmul,
  MoeRoute,       // mixture-of-experts routing (top-k gating)
  MoePermute,     // tokens to expert order and back (permute / unpermute)
  GroupedMatmul,  // one matmul per expert over its rows
  CopyRows,       // strided row copies (slicing and assembling activations)
  MlaQkv,         // multi-head latent attention's q/k/v assembly
  kCount
};
inline constexpr int kKernelCount = int(Kernel::kCount);
std::string_view kernel_name(Kernel k);

// C[b] = alpha * op(A[b]) @ op(B[b]) + beta * C[b], row-major, for b < batch.
// op(A) is MxK, op(B) is KxN, C is MxN. lda/ldb/ldc are row strides of the
// stored (untransposed) matrices; stride_* are element offsets between batches.
// Accumulation is f32. Dtypes: (a,b,c) in {(F32,F32,F32), (BF16,BF16,F32),
// (BF16,BF16,BF16)}.
struct MatmulArgs {
  bool trans_a = false, trans_b = false;
  int64_t M = 0, N = 0, K = 0;
  int64_t lda = 0, ldb = 0, ldc = 0;
  int64_t batch = 1, stride_a = 0, stride_b = 0, stride_c = 0;
  float alpha = 1.f, beta = 0.f;
  DType a_dtype = DType::F32, b_dtype = DType::F32, c_dtype = DType::F32;
};

// Causal scaled-dot-product attention with grouped-query heads.
// q[b, t, h, d] = q[b*q_batch_stride + t*q_row_stride + h*HS + d] (t < Tq);
// k, v likewise with kv strides (t < Tk) and NKV heads; query head h reads kv
// head h / (NH / NKV). Query t sits at absolute position Tk - Tq + t and sees
// keys 0..Tk-Tq+t (Tq == Tk in training; Tq < Tk when decoding with a cache).
// o is contiguous (B, Tq, NH, HS); lse is (B, NH, Tq) f32, the log-sum-exp of
// the scaled scores of each query row, saved for backward.
struct AttentionArgs {
  int64_t B = 0, Tq = 0, Tk = 0, NH = 0, NKV = 0, HS = 0;
  int64_t q_row_stride = 0, q_batch_stride = 0;
  int64_t kv_row_stride = 0, kv_batch_stride = 0;
  float scale = 1.f;
  DType dt = DType::F32;
};

// Rotary embedding over (B, T, NH, HS) rows with row stride `row_stride`
// (elements between consecutive tokens); rotates adjacent pairs (x[2i],
// x[2i+1]) by angle pos * theta^(-2i/HS), pos = pos0 + t. HS must be even.
struct RopeArgs {
  int64_t B = 0, T = 0, NH = 0, HS = 0, row_stride = 0, batch_stride = 0;
  int64_t pos0 = 0;
  float theta = 10000.f;
  DType dt = DType::F32;
};

// Decoupled AdamW on f32 master weights. g is multiplied by grad_scale first
// (global-norm clipping); bias correction uses step t (1-based). When
// param_bf16 is non-null the updated weights are also written there in bf16.
struct AdamWArgs {
  int64_t n = 0;
  float lr = 0, beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f, weight_decay = 0;
  float grad_scale = 1.f;
  int64_t t = 1;
  // Share of the second moment's noise kept: the denominator uses
  // sqrt(k * vhat + (1 - k) * mhat^2). 1 is AdamW. A gradient from 1/N of the
  // batch carries N times the noise variance of the batch's mean gradient;
  // k = 1/N estimates the second moment that mean would have (mhat^2 stands
  // for the squared signal), so a rank stepping on its own share of the batch
  // normalises like the whole batch would.
  float variance_keep = 1.f;
  // When set, and Backend::digests_moments() says so, the update also writes
  // the piece digests (core/piece_digest.h) of m and of v as it read them and
  // as it left them: {m before, v before, m after, v after}. The SDC seal of
  // the moments then costs no pass of its own.
  uint64_t* moment_digests = nullptr;
};

enum class ReduceOp : uint8_t { Sum, Mean, Max };

// ---- mixture of experts (see the kernels at the end of Backend)
enum class MoeGating : uint8_t { Softmax, Sigmoid };
struct MoeRouteArgs {
  int64_t N = 0, E = 0, K = 0;  // tokens, experts, experts per token (1 <= K <= E)
  MoeGating gating = MoeGating::Softmax;
  bool norm_topk = true;  // divide the K selected scores by their sum
  float scale = 1.f;      // routed scaling factor on the weights
  // Selection jitter (training): token n's key for expert e gains
  // route_jitter(*this, n, e), uniform in [-noise, noise). It moves which
  // experts are chosen, never the scores or the weights; 0 turns it off.
  float noise = 0.f;
  uint64_t noise_seed = 0;
};
// noise * (2u - 1) with u = Rng(noise_seed, 0).uniform(n * E + e): the same
// bits in every backend.
inline float route_jitter(const MoeRouteArgs& a, int64_t n, int64_t e) {
  return a.noise * (2.f * Rng(a.noise_seed, 0).uniform(uint64_t(n * a.E + e)) - 1.f);
}
// Every group's weight is (N, K), stored at w[g*N*K + n*K + k]; group g owns
// rows offsets[g] <= r < offsets[g+1] of x and y (offsets: G + 1 ascending
// entries from 0, in the backend's memory like every kernel argument). x, y,
// w and the activation gradients have dtype dt.
struct GroupedMatmulArgs {
  int64_t G = 0, N = 0, K = 0;
  const int64_t* offsets = nullptr;
  DType dt = DType::F32;
};

// Multi-head latent attention's per-head layout: every head's query and key
// are nope + rope wide (D), its value v wide (v <= D); N tokens.
struct MlaArgs {
  int64_t N = 0, NH = 0, nope = 0, rope = 0, v = 0;
  DType dt = DType::F32;
  int64_t D() const { return nope + rope; }
};

// The dtype coverage of the host backends: F32 and BF16 for every activation
// kernel, F16 as well for elementwise kernels and casts, F32 for AdamW, and the
// quantized types for quantize/qmatmul. A new backend may start from it.
bool standard_dtype_support(Kernel k, DType dt);

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string_view name() const = 0;
  // Human-readable description of what runs (e.g. GEMM library and kernel).
  virtual std::string describe() const { return std::string(name()); }
  // Whether kernel k accepts activation dtype dt. Unsupported means the
  // conformance suite reports SKIP and ops.h throws KernelError.
  virtual bool supports(Kernel k, DType dt) const = 0;
  // Threads the backend may use (1 = serial). Results must not change with it.
  virtual void set_threads(int n) { (void)n; }
  virtual int threads() const { return 1; }

  // ---- memory and queue. The defaults are those of a backend whose memory
  // is the host's: malloc, memcpy, nothing to wait for.
  // Whether device addresses are host pointers (the host may read them).
  virtual bool host_memory() const { return true; }
  // Whether adamw_update fills AdamWArgs::moment_digests.
  virtual bool digests_moments() const { return false; }
  // `bytes` of zeroed device memory, 64-byte aligned; throws keel::Error
  // naming the size and the budget when it does not fit. `what` names the
  // tensor in that error.
  virtual void* allocate(size_t bytes, std::string_view what = {}) {
    (void)what;
    void* p = std::aligned_alloc(64, (std::max<size_t>(bytes, 1) + 63) / 64 * 64);
    if (!p) throw std::bad_alloc();
    std::memset(p, 0, bytes);
    return p;
  }
  virtual void release(void* p) { std::free(p); }
  // Host to device, ordered after the kernels enqueued before it; `src` may
  // be reused as soon as it returns.
  virtual void upload(void* dst, const void* src, size_t bytes) { std::memcpy(dst, src, bytes); }
  // Device to host: waits for the queue, then copies.
  virtual void download(void* dst, const void* src, size_t bytes) { std::memcpy(dst, src, bytes); }
  // Device to device, ordered on the queue.
  virtual void copy(void* dst, const void* src, size_t bytes) { std::memmove(dst, src, bytes); }
  // Zeroes device bytes, ordered on the queue (gradients before a step).
  virtual void fill_zero(void* dst, size_t bytes) { std::memset(dst, 0, bytes); }
  // Waits until every enqueued kernel and copy has finished.
  virtual void synchronize() {}
  // Host waits and bytes moved across the host/device boundary since the
  // backend was made (zero for host-memory backends: nothing moves).
  struct TransferStats {
    uint64_t syncs = 0, bytes_to_device = 0, bytes_to_host = 0;
  };
  virtual TransferStats transfer_stats() const { return {}; }

  // ---- dense linear algebra
  virtual void matmul(const MatmulArgs& a, const void* A, const void* B, void* C) = 0;

  // ---- embedding: out[i, :] = table[ids[i], :]  (ids: int32, n rows, C cols)
  virtual void embedding_forward(DType dt, const int32_t* ids, const void* table, void* out,
                                 int64_t n, int64_t C) = 0;
  // dtable[ids[i], :] += dout[i, :]  (dtable f32)
  virtual void embedding_backward(DType dt, const int32_t* ids, const void* dout, float* dtable,
                                  int64_t n, int64_t C) = 0;

  // ---- norms over rows of x (N, C). b may be null (no bias).
  virtual void layernorm_forward(DType dt, const void* x, const void* w, const void* b, void* y,
                                 float* mean, float* rstd, int64_t N, int64_t C, float eps) = 0;
  // dx += ..., dw += ..., db += ... (db may be null)
  virtual void layernorm_backward(DType dt, const void* dy, const void* x, const void* w,
                                  const float* mean, const float* rstd, void* dx, float* dw,
                                  float* db, int64_t N, int64_t C) = 0;
  virtual void rmsnorm_forward(DType dt, const void* x, const void* w, void* y, float* rstd,
                               int64_t N, int64_t C, float eps) = 0;
  virtual void rmsnorm_backward(DType dt, const void* dy, const void* x, const void* w,
                                const float* rstd, void* dx, float* dw, int64_t N, int64_t C) = 0;

  // ---- rotary embedding; y may alias x. Backward: dx += rotate(dy, -angle).
  virtual void rope_forward(const RopeArgs& a, const void* x, void* y) = 0;
  virtual void rope_backward(const RopeArgs& a, const void* dy, void* dx) = 0;

  // ---- causal attention (see AttentionArgs)
  virtual void attention_forward(const AttentionArgs& a, const void* q, const void* k,
                                 const void* v, void* o, float* lse) = 0;
  // dq, dk, dv share the layouts (and strides) of q, k, v; accumulated.
  virtual void attention_backward(const AttentionArgs& a, const void* dout, const void* q,
                                  const void* k, const void* v, const void* o, const float* lse,
                                  void* dq, void* dk, void* dv) = 0;

  // ---- elementwise activations over n elements
  // gelu: tanh approximation (GPT-2's).
  virtual void gelu_forward(DType dt, const void* x, void* y, int64_t n) = 0;
  virtual void gelu_backward(DType dt, const void* x, const void* dy, void* dx, int64_t n) = 0;
  virtual void silu_forward(DType dt, const void* x, void* y, int64_t n) = 0;
  virtual void silu_backward(DType dt, const void* x, const void* dy, void* dx, int64_t n) = 0;
  // y = silu(gate) * up
  virtual void swiglu_forward(DType dt, const void* gate, const void* up, void* y, int64_t n) = 0;
  virtual void swiglu_backward(DType dt, const void* gate, const void* up, const void* dy,
                               void* dgate, void* dup, int64_t n) = 0;

  // ---- y = a + b (y may alias a or b); backward is accumulate().
  virtual void add(DType dt, const void* a, const void* b, void* y, int64_t n) = 0;
  // y += alpha * x  (the gradient accumulator; also scales when y is zero)
  virtual void accumulate(DType dt, const void* x, void* y, int64_t n, float alpha) = 0;
  // y[N, C] += bias[C]; backward: dbias[c] += sum_i dy[i, c] (dbias f32)
  virtual void bias_add(DType dt, void* y, const void* bias, int64_t N, int64_t C) = 0;
  virtual void bias_backward(DType dt, const void* dy, float* dbias, int64_t N, int64_t C) = 0;

  // ---- strided rows: for r < rows and c < cols, dst[r * dst_stride + c] =
  // src[r * src_stride + c], or += when accumulate (f32 math, rounded once
  // to dt). src and dst do not overlap. Slices and head layouts use it.
  virtual void copy_rows(DType dt, const void* src, int64_t src_stride, void* dst,
                         int64_t dst_stride, int64_t rows, int64_t cols, bool accumulate) = 0;

  // ---- MLA's attention input (see MlaArgs). qkv is (N, 3 * NH * D): the NH
  // query heads (q, (N, NH * D), copied), the NH key heads (nope columns from
  // kv's head, then kpe (N, rope), shared by every head) and the NH value
  // heads (kv's v columns, zero past v); kv is (N, NH * (nope + v)). The
  // rotary embedding is applied to the rope columns afterwards.
  virtual void mla_qkv_forward(const MlaArgs& a, const void* q, const void* kv, const void* kpe,
                               void* qkv) = 0;
  // Accumulates the gradient of that copy: dq += g's query columns, except
  // the rope columns, taken from g_rope (g with the rotation undone there);
  // dkv += g's key nope and value columns; dkpe += the sum over key heads
  // (ascending, f32, rounded once) of g_rope's key rope columns.
  virtual void mla_qkv_backward(const MlaArgs& a, const void* g, const void* g_rope, void* dq,
                                void* dkv, void* dkpe) = 0;

  // ---- softmax cross-entropy over rows of logits (N, V). targets < 0 are
  // ignored (loss 0, gradient 0). losses[i] = lse[i] - logits[i, t_i].
  virtual void cross_entropy_forward(DType dt, const void* logits, const int32_t* targets,
                                     float* losses, float* lse, int64_t N, int64_t V) = 0;
  // dlogits[i, :] += dloss[i] * (softmax(logits[i]) - onehot(t_i))
  virtual void cross_entropy_backward(DType dt, const void* logits, const int32_t* targets,
                                      const float* lse, const float* dloss, void* dlogits,
                                      int64_t N, int64_t V) = 0;

  // ---- optimizer (all f32); param_bf16 may be null
  virtual void adamw_update(const AdamWArgs& a, float* param, const float* grad, float* m, float* v,
                            uint16_t* param_bf16) = 0;

  // ---- reductions over the last axis: y[i] = op_j x[i, j] (y f32)
  virtual void reduce_forward(ReduceOp op, DType dt, const void* x, float* y, int64_t N,
                              int64_t C) = 0;
  // dx[i, j] += dy[i] (Sum), dy[i]/C (Mean), dy[i] at the first argmax (Max)
  virtual void reduce_backward(ReduceOp op, DType dt, const void* x, const float* dy, void* dx,
                               int64_t N, int64_t C) = 0;
  // out[0] (f64, device memory) = sum of x[i]^2 over fixed chunks (gradient
  // norms, health checks); the result stays on the device until downloaded.
  virtual void sum_squares(DType dt, const void* x, int64_t n, double* out) = 0;
  // sum_squares read back to the host (one synchronisation on a device).
  double sum_squares_host(DType dt, const void* x, int64_t n) {
    double r = 0;
    if (host_memory()) {
      sum_squares(dt, x, n, &r);
      return r;
    }
    void* d = allocate(sizeof(double), "sum_squares result");
    try {
      sum_squares(dt, x, n, static_cast<double*>(d));
      download(&r, d, sizeof(double));
    } catch (...) {
      release(d);
      throw;
    }
    release(d);
    return r;
  }

  // ---- conversions between F32, BF16 and F16 (round to nearest even)
  virtual void cast(DType src_dt, const void* src, DType dst_dt, void* dst, int64_t n) = 0;

  // ---- weight quantization of w (N, K) f32 rows (round = nearest, ties to even).
  // I8: q[N, K] int8 and scale[N] f32 with scale = max|w_row| / 127, q = round(w / scale)
  //     (scale 0 and q 0 for an all-zero row).
  // Q8_0: per block of 32, d = f16(amax / 127), q = round(w / d).
  // Q4_0: per block of 32, m = the value of largest magnitude (sign kept), d = f16(m / -8),
  //     q = min(15, int(w / d + 8.5)) (llama.cpp's rule, so GGUF export is a copy).
  // Blocked types need K % 32 == 0 and take scale = null.
  virtual void quantize(DType qdt, const float* w, void* q, float* scale, int64_t N, int64_t K) = 0;
  virtual void dequantize(DType qdt, const void* q, const float* scale, float* w, int64_t N,
                          int64_t K) = 0;
  // y[M, N] f32 = x[M, K] f32 @ dequant(W)^T, with x itself quantized first:
  // for I8 weights, per row of x to int8 (scale max|x_row|/127); for Q4_0/Q8_0
  // weights, per block of 32 to Q8_0. Integer dot products, then scaled: so a
  // fast backend matches ref up to f32 rounding.
  virtual void qmatmul(DType qdt, const float* x, const void* wq, const float* wscale, float* y,
                       int64_t M, int64_t N, int64_t K) = 0;
  // Optional: a weight layout of the backend's own for qmatmul. qpack_bytes
  // is the size of that form of an (N, K) weight of qdt, or 0 (the default)
  // when the backend multiplies quantize()'s plain layout only. qpack turns
  // quantize()'s output (q, plus scale for I8) into it; qmatmul_packed is
  // qmatmul on it: same quantization of x, same result up to f32 rounding,
  // in an order of the backend's that depends neither on M nor on the
  // thread count (row m of any call equals the call on row m alone, bit for
  // bit). The packed form is private to the backend and this CPU: export
  // and other backends read the plain one.
  virtual size_t qpack_bytes(DType qdt, int64_t N, int64_t K) const {
    (void)qdt, (void)N, (void)K;
    return 0;
  }
  virtual void qpack(DType qdt, const void* q, const float* scale, void* packed, int64_t N,
                     int64_t K) {
    (void)qdt, (void)q, (void)scale, (void)packed, (void)N, (void)K;
    fail<KernelError>("[qpack] {} backend has no packed layout", name());
  }
  virtual void qmatmul_packed(DType qdt, const float* x, const void* packed, float* y, int64_t M,
                              int64_t N, int64_t K) {
    (void)qdt, (void)x, (void)packed, (void)y, (void)M, (void)N, (void)K;
    fail<KernelError>("[qmatmul_packed] {} backend has no packed layout", name());
  }

  // ==== mixture of experts (DeepSeekMoE). All routing math is f32.
  // scores[n, e] = sigmoid(logits[n, e]), or the softmax of row n. Token n's
  // experts idx[n, 0..K) are the K largest keys scores[n, e] + bias[e] (an f32
  // sum; bias may be null), by key descending, equal keys to the smaller id.
  // The bias only selects: w[n, k] = scale * scores[n, idx[n, k]], divided by
  // the sum of the K selected scores when norm_topk.
  virtual void moe_route_forward(const MoeRouteArgs& a, const float* logits, const float* bias,
                                 float* scores, int32_t* idx, float* w) = 0;
  // dlogits (N, E) += the gradient through scores of sum(dw * w) plus, when
  // dscores is non-null, sum(dscores * scores) (an auxiliary loss on scores).
  virtual void moe_route_backward(const MoeRouteArgs& a, const float* scores, const int32_t* idx,
                                  const float* dw, const float* dscores, float* dlogits) = 0;
  // pos (N, K) i32: the row of token n's k-th expert slot in the permuted
  // buffer (rows grouped by expert), or -1 for a dropped slot.
  // xp[pos[n, k], :] = x[n, :] (C columns); rows no slot names are untouched.
  virtual void moe_permute_forward(DType dt, const int32_t* pos, const void* x, void* xp, int64_t N,
                                   int64_t K, int64_t C) = 0;
  // dx[n, :] += sum over k ascending of dxp[pos[n, k], :]
  virtual void moe_permute_backward(DType dt, const int32_t* pos, const void* dxp, void* dx,
                                    int64_t N, int64_t K, int64_t C) = 0;
  // y[n, :] = sum over k ascending of w[n, k] * yp[pos[n, k], :] (0 if all dropped)
  virtual void moe_unpermute_forward(DType dt, const int32_t* pos, const float* w, const void* yp,
                                     void* y, int64_t N, int64_t K, int64_t C) = 0;
  // dyp[pos[n, k], :] += w[n, k] * dy[n, :]; dw[n, k] += dy[n, :] . yp[pos[n, k], :] (dw f32)
  virtual void moe_unpermute_backward(DType dt, const int32_t* pos, const float* w, const void* yp,
                                      const void* dy, void* dyp, float* dw, int64_t N, int64_t K,
                                      int64_t C) = 0;
  // The dispatch plan of a routing idx (N, K): expert e keeps its first
  // `capacity` slots in token order (all when capacity is 0), the others are
  // dropped. offsets (E + 1, int64): offsets[e] is the first permuted row of
  // expert e, offsets[E] the rows kept (N * K - offsets[E] slots dropped);
  // pos (N, K): offsets[idx] + the slot's rank within its expert, or -1.
  virtual void moe_plan(const int32_t* idx, int64_t N, int64_t K, int64_t E, int64_t capacity,
                        int32_t* pos, int64_t* offsets) = 0;
  // Routing statistics of one forward, accumulated: load (4, E) f32 gains
  // row 0: slots idx gave expert e, row 1 / 2: the sum of scores[:, e] / of
  // their squares (each an f64 sum over tokens ascending, added once), row
  // 3: slots plain_idx gave e. stats (2, f64) gains the sum over tokens of
  // the routing entropy -sum_e p log p (p = scores normalised per token) and
  // the slots pos drops (pos < 0).
  virtual void moe_route_stats(const MoeRouteArgs& a, const float* scores, const int32_t* idx,
                               const int32_t* plain_idx, const int32_t* pos, float* load,
                               double* stats) = 0;
  // The sequence-level balance loss over a.N / T sequences of T tokens:
  // per sequence f_e = E / (K T) * (slots idx gave e), P_e = mean over its
  // tokens of the normalised scores, L = alpha * mean over sequences of
  // sum_e f_e P_e. loss[0] (f64) += L; dscores (N, E) = grad_scale * dL /
  // dscores (written, not accumulated).
  virtual void moe_aux_loss(const MoeRouteArgs& a, int64_t T, float alpha, float grad_scale,
                            const float* scores, const int32_t* idx, float* dscores,
                            double* loss) = 0;
  // y[r, :] = x[r, :] @ w[g]^T for the rows r of group g: x (R, K), y (R, N).
  virtual void grouped_matmul_forward(const GroupedMatmulArgs& a, const void* x, const void* w,
                                      void* y) = 0;
  // dx[r, :] += dy[r, :] @ w[g]; dw[g] (f32) += dy_g^T @ x_g. dx or dw may be null.
  virtual void grouped_matmul_backward(const GroupedMatmulArgs& a, const void* dy, const void* x,
                                       const void* w, void* dx, float* dw) = 0;
};

// Backends present in this build, by name ("ref", "cpu", "cuda").
std::vector<std::string> backend_names();
// Creates a backend by name; throws keel::Error listing the names present.
std::unique_ptr<Backend> make_backend(std::string_view name);

}  // namespace keel::backend
