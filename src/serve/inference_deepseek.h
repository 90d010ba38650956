// The inference forward of deepseek (multi-head latent attention and
// DeepSeekMoE) over backend kernels and the parameters by name: the KV cache
// holds per token and layer only the normalised latent (kv_lora_rank) and the
// rotated shared key (qk_rope_head_dim); each forward rebuilds the per-head
// keys and values from it. Routing uses the trained selection bias, so a token
// goes to the experts it went to in training.
//
// Weights, activations and the latent cache live in the backend's memory (a
// device's, or the host's): the host uploads token ids (and, per MoE layer,
// the rows each expert runs) and downloads the route choice of each MoE
// layer and the sampled logits rows.
#pragma once
#include <cstdint>
#include <map>
#include <span>
#include <vector>

#include "backend/backend.h"
#include "core/tensor.h"
#include "model/model.h"
#include "serve/forward_batch.h"
#include "serve/inference_linear.h"
#include "serve/kv_cache.h"
#include "store/model_weights.h"

namespace keel::serve {

class DeepSeekInference {
 public:
  // Copies (or quantizes to `format`) the weights it needs out of w; the
  // router stays f32 so that quantization cannot change which experts run.
  DeepSeekInference(const store::ModelWeights& w, backend::Backend& be, DType format);

  // Floats cached per token and layer: kv_lora_rank + qk_rope_head_dim.
  int64_t cache_width() const { return cfg_.kv_lora_rank + cfg_.qk_rope_head_dim; }
  // The KvCachePool kv_dim that holds cache_width() floats per token and
  // layer in its 2 * kv_dim slots (one float wasted when the width is odd).
  int64_t pool_kv_dim() const { return (cache_width() + 1) / 2; }
  // Bytes of weights one decode token reads: every dense matrix, the router,
  // the top_k routed experts' matrices and one embedding row.
  size_t weight_bytes_per_token() const;

  // Same contracts as InferenceModel::prefill / decode.
  void prefill(KvSequence& seq, std::span<const int32_t> ids, float* logits, bool all_logits);
  void decode(std::span<KvSequence* const> seqs, std::span<const int32_t> tokens, float* logits);

 private:
  using Linear = InferenceLinear;
  struct Mlp {       // SwiGLU: gate and up stacked (2F, C), down (C, F)
    Linear gate_up;  // rows [0, F) gate, [F, 2F) up
    Linear down;
  };
  struct Layer {
    Tensor attn_norm, ffn_norm, q_a_norm, kv_a_norm;
    Linear q, q_a, q_b, kv_a, kv_b, o;
    bool moe = false;
    Mlp dense;                 // first n_dense_layers
    Linear router;             // (E, C), f32
    Tensor bias;               // (E) selection bias
    std::vector<Mlp> experts;  // E routed experts
    bool has_shared = false;
    Mlp shared;
  };
  using Segment = ForwardSegment;

  Linear make_linear(const Tensor& f, bool keep_f32 = false) const;
  Linear stacked(const Tensor& a, const Tensor& b) const;
  void linear(const Linear& l, const float* x, float* y, int64_t M);
  // dst[b*dbs + r*ldd + c] = src[b*sbs + r*lds + c] for c < cols, r < rows,
  // b < batch: the strided gathers of MLA (latent, per-head keys, values).
  void copy_block(float* dst, int64_t ldd, const float* src, int64_t lds, int64_t rows,
                  int64_t cols, int64_t batch = 1, int64_t dbs = 0, int64_t sbs = 0);
  void rmsnorm(const Tensor& w, const float* x, float* y, int64_t M, int64_t C);
  void mlp(const Mlp& m, const float* x, float* y, int64_t M);
  void attention(const Layer& L, int64_t layer, std::span<const Segment> segs, const float* h,
                 int64_t M, float* out);
  void moe(const Layer& L, const float* h, int64_t M, float* out);
  void forward(std::span<const Segment> segs, const int32_t* ids, int64_t M,
               std::span<const int64_t> logit_rows, float* logits);

  model::ModelConfig cfg_;
  backend::Backend& be_;
  DType format_;
  Tensor tok_emb_, final_norm_;
  std::vector<Layer> layers_;
  Linear head_;
  bool device_;  // the backend's memory is not the host's
  // Scratch reused across calls (one engine thread drives a model), in the
  // backend's memory, grown to the largest call so far.
  Tensor x_, h_, a_, q_, qa_, ckv_, lat_, kv_, k_, v_, o_, ov_, f1_, f2_, f3_, route_logits_,
      scores_, wts_, gx_, gy_, stats_, lse_, rows_, logits_, ids_, idx_dev_, pos_dev_;
  // Host copies of the routing: idx (the route kernel's output on the host,
  // downloaded from a device) and the permuted row of each (token, slot).
  std::vector<int32_t> idx_, pos_;
  std::vector<int64_t> offsets_;
};

}  // namespace keel::serve
