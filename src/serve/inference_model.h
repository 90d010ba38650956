// The inference forward of gpt2 and llama written directly over backend
// kernels and the parameters by name (no autograd tape): prefill of T tokens
// of one sequence, and decode of one token for each of B sequences at their
// own positions, reading and appending to each sequence's KV cache. Linear
// weights are f32 or quantized at load time (int8 per output row, Q8_0 or
// Q4_0 blocks of 32) and multiplied through the backend's qmatmul.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "core/tensor.h"
#include "model/model.h"
#include "serve/forward_batch.h"
#include "serve/inference_linear.h"
#include "serve/kv_cache.h"
#include "store/model_weights.h"

namespace keel::serve {

// "none"/"f32" -> F32, "int8" -> I8 (per output row), "q8_0" -> Q8_0,
// "q4"/"q4_0" -> Q4_0. RequestError-free: ConfigError naming the value.
DType weight_format_from_name(const std::string& name);
// "f32" -> F32, "bf16" -> BF16: the KV cache's element type. ConfigError
// naming the value otherwise.
DType kv_dtype_from_name(const std::string& name);

class DeepSeekInference;

// Wall seconds per phase of the gpt2/llama forward, summed over calls while
// attached (bench_serve --profile): where a decode step's time goes.
struct ForwardProfile {
  enum Phase {
    kEmbed,
    kNorm,
    kQkv,
    kAttention,
    kOut,
    kUp,
    kActivation,
    kDown,
    kResidual,
    kHead,
    kCount
  };
  static const char* name(int phase);
  double seconds[kCount] = {};
  int64_t calls = 0;
};

class InferenceModel {
 public:
  // Copies (or quantizes) every weight it needs out of w; w may go away after.
  // deepseek runs through DeepSeekInference (serve/inference_deepseek.h).
  // kv_dtype: the KV cache's element type, F32 or BF16 (half the memory per
  // sequence and half the cache bytes a decode step reads; q, k and v are
  // rounded to bf16 and attention sums in f32). ConfigError for anything
  // else, for bf16 on deepseek, or on a backend without bf16 attention.
  InferenceModel(const store::ModelWeights& w, backend::Backend& be, DType format,
                 DType kv_dtype = DType::F32);
  ~InferenceModel();

  const model::ModelConfig& config() const { return cfg_; }
  DType format() const { return format_; }
  // What KvCachePools for this model must hold (KvCachePool's dtype).
  DType kv_dtype() const { return kv_dtype_; }
  // The KvCachePool kv_dim: n_kv_head * head_size, or for deepseek half the
  // per-layer latent cache width (rounded up; see DeepSeekInference).
  int64_t kv_dim() const { return kv_dim_; }
  // Where weights, activations and (through KvCachePool) the KV cache live.
  backend::Backend& backend() const { return be_; }
  int64_t head_size() const { return cfg_.n_embd / cfg_.n_head; }
  // Bytes of weights one decode step reads (every matrix once, plus one
  // embedding row per token): the numerator of the bandwidth roofline.
  size_t weight_bytes_per_token() const;

  // Runs ids at positions seq.length() .. seq.length() + T - 1, appending
  // their keys and values to seq (which must have room). logits receives
  // the last position's row (V), or every position's (T, V) when all_logits.
  // Copies the cache rows of the first T positions of src into dst (same
  // pool; dst's length becomes T): what prefilling src's first T tokens into
  // dst would have written, in this model's own cache layout.
  void copy_cache_prefix(KvSequence& dst, KvSequence& src, int64_t T) const;
  void prefill(KvSequence& seq, std::span<const int32_t> ids, float* logits,
               bool all_logits = false);
  // One token per sequence, each at its own position seq->length(); appends
  // to each cache. logits is (B, V).
  void decode(std::span<KvSequence* const> seqs, std::span<const int32_t> tokens, float* logits);
  // Attaches (or with null detaches) a profile that forward() adds its phase
  // times to; the model does not own it. Not for deepseek.
  void set_profile(ForwardProfile* p) { profile_ = p; }

 private:
  using Linear = InferenceLinear;
  struct Layer {
    Tensor norm1_w, norm1_b, norm2_w, norm2_b;  // biases: gpt2 only
    Linear qkv;                                 // (C + 2 kv, C): q, k, v rows
    Linear out;                                 // (C, C)
    Linear up;    // gpt2: c_fc (F, C); llama: gate and up stacked (2F, C)
    Linear down;  // (C, F)
  };
  using Segment = ForwardSegment;

  Linear make_linear(const std::vector<const Tensor*>& parts, const Tensor* bias) const;
  void gather_weights();
  void linear(const Linear& l, const float* x, float* y, int64_t M);
  void norm(const Tensor& w, const Tensor& b, const float* x, float* y, int64_t M);
  void forward(std::span<const Segment> segs, const int32_t* ids, int64_t M,
               std::span<const int64_t> logit_rows, float* logits);

  model::ModelConfig cfg_;
  backend::Backend& be_;
  DType format_;
  DType kv_dtype_;
  bool llama_;
  int64_t kv_dim_ = 0;
  std::unique_ptr<DeepSeekInference> deepseek_;
  Tensor tok_emb_, pos_emb_;  // pos_emb_: gpt2 only
  std::vector<Layer> layers_;
  Tensor final_w_, final_b_;
  Linear head_;
  // The host linears' weights, back to back (gather_weights).
  Tensor weight_arena_;
  // Scratch reused across calls (one engine thread drives a model).
  // Activations in the backend's memory (a device's, or the host's), grown
  // to the largest call so far.
  Tensor x_, h_, qkv_, att_, ff_, ff2_, stats_, lse_, rows_, logits_, ids_, pos_dev_;
  Tensor qkv16_, att16_;  // bf16 copies of qkv_ and att_ for a bf16 cache
  std::vector<int32_t> pos_;
  ForwardProfile* profile_ = nullptr;
  int linear_threads_ = 1;  // the backend's thread count when forward() began
};

}  // namespace keel::serve
