// Model: the public face of every architecture (gpt2, llama, ...) to the
// trainer, the generator and the exporters. An architecture only writes its
// forward pass from nn modules; loss and backward come from the tape.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "backend/backend.h"
#include "core/tensor.h"
#include "nn/parameter.h"

namespace keel::model {

struct ModelConfig {
  std::string arch = "gpt2";  // "gpt2" | "llama" | "deepseek"
  int64_t vocab_size = 0;
  int64_t n_layer = 0;
  int64_t n_head = 0;
  int64_t n_kv_head = 0;  // llama GQA; gpt2 uses n_head
  int64_t n_embd = 0;
  int64_t ffn_hidden = 0;   // MLP inner width (gpt2: 4*n_embd by default)
  int64_t max_seq_len = 0;  // learned positions (gpt2) / rope range (llama)
  float rope_theta = 10000.f;
  float norm_eps = 1e-5f;
  float init_std = 0.02f;
  DType compute_dtype = DType::F32;  // F32 or BF16 (master weights stay f32)
  bool recompute = false;            // recompute each block's activations in backward

  // ---- deepseek: multi-head latent attention and DeepSeekMoE (model/deepseek*.cpp)
  int64_t q_lora_rank = 0;       // 0: q projected directly from the hidden state
  int64_t kv_lora_rank = 0;      // width of the shared compressed KV latent
  int64_t qk_nope_head_dim = 0;  // 0: n_embd / n_head
  int64_t qk_rope_head_dim = 0;  // 0: qk_nope_head_dim / 2 (the decoupled rotary key part)
  int64_t v_head_dim = 0;        // 0: qk_nope_head_dim
  int64_t n_routed_experts = 0;
  int64_t n_shared_experts = 0;
  int64_t top_k = 0;               // routed experts per token
  int64_t moe_ffn_hidden = 0;      // 0: ffn_hidden / (top_k + n_shared_experts)
  int64_t n_dense_layers = 0;      // the first layers keep a dense SwiGLU MLP
  std::string gating = "sigmoid";  // "sigmoid" (DeepSeek-V3) | "softmax" (V2)
  bool norm_topk_prob = true;      // normalise the top-k weights to sum 1
  float routed_scaling = 1.f;      // scale on the routed experts' output
  float bias_update_rate = 0.5f;   // aux-loss-free balancing gain (see deepseek_moe.h; 0: off)
  float aux_loss_alpha = 0.f;      // sequence-level balance loss weight (0: off)
  float capacity_factor = 0.f;     // > 0: expert capacity = ceil(f * N * top_k / experts)
  // Training only: each routing key gains a uniform jitter in [-router_noise,
  // router_noise) (backend::route_jitter), so tokens whose scores nearly tie
  // spread over experts instead of following the bias together (0: off).
  float router_noise = 0.f;
};

class Model {
 public:
  virtual ~Model() = default;
  virtual const ModelConfig& config() const = 0;
  // The backend whose memory holds the parameters (a device's, or the host's).
  virtual backend::Backend& backend() const = 0;
  // Every trainable parameter, in a fixed order (the order of the checkpoint).
  virtual std::vector<nn::Parameter*> parameters() = 0;
  // Deterministic initialisation from a seed (each parameter has its own RNG stream).
  virtual void init(uint64_t seed) = 0;
  // After the f32 master weights change (optimizer, load), refresh compute copies.
  virtual void sync_compute_weights() = 0;

  // One micro-batch: forward, loss, backward. ids and targets are host i32 (B, T);
  // targets < 0 are ignored. Gradients of loss * grad_scale are ACCUMULATED
  // into Parameter::grad. Returns the mean loss over counted targets.
  virtual float forward_backward(const Tensor& ids, const Tensor& targets, float grad_scale) = 0;
  // Forward only: mean loss (evaluation).
  virtual float loss(const Tensor& ids, const Tensor& targets) = 0;
  // Forward only: f32 logits (B, T, V) for ids (B, T).
  virtual Tensor logits(const Tensor& ids) = 0;

  // Total parameter count and FLOPs of one forward+backward token (for MFU).
  int64_t num_parameters();
  // 6 * (parameters of every matrix product, the LM head included, embedding
  // lookups excluded) + 12 * n_layer * n_embd * seq_len (attention scores and
  // weighted sum, forward and backward, PaLM's convention; causal masking not
  // subtracted).
  virtual double flops_per_token(int64_t seq_len) const = 0;

  // Sets every Parameter::grad to zero (gradients otherwise accumulate).
  void zero_grad();
  // Training state that is not a parameter and not trained by the optimizer
  // (e.g. a mixture-of-experts routing bias), as (name, tensor) pairs in a
  // fixed order: checkpoints save and restore it so resume stays bit-exact.
  virtual std::vector<std::pair<std::string, Tensor*>> state_buffers() { return {}; }
  // The part of that state inference needs (e.g. the routing bias, which
  // decides which experts run): saved with the weights and loaded with them.
  virtual std::vector<std::pair<std::string, Tensor*>> inference_buffers() { return {}; }
  // Called by the trainer once per step after the optimizer (applied = false
  // for a skipped step), after step_statistics(): mixture-of-experts routing
  // updates its balancing bias from the step's expert load here and clears
  // the load. With data parallelism the load buffers (state_buffers() named
  // "*.expert_load") must first be summed over ranks so every rank applies
  // the same, global update.
  virtual void on_step_end(bool applied) { (void)applied; }
  // Figures of the forward-only passes (loss, logits) since the last call,
  // e.g. "val_expert_load_max_mean": the routing a served model does, which
  // training's jitter does not touch. Clears them.
  virtual std::vector<std::pair<std::string, double>> take_eval_statistics() { return {}; }
  // Per-step figures for metrics.jsonl gathered since the last on_step_end
  // (e.g. "expert_load_max_mean", "routing_entropy"), in a fixed order.
  virtual std::vector<std::pair<std::string, double>> step_statistics() const { return {}; }
  // Peak bytes of activations (and their gradients) held by one step so far.
  virtual size_t activation_bytes() const { return 0; }
};

// Builds the architecture named by cfg.arch on the given backend (which must
// outlive the model). Throws ConfigError for an unknown arch or bad sizes.
// The model's config() has defaults filled in: n_kv_head = n_head when 0;
// ffn_hidden = 4 * n_embd (gpt2) or 8/3 * n_embd rounded up to a multiple of
// 64 (llama) when 0. Parameters start zeroed: call init(seed).
std::unique_ptr<Model> make_model(const ModelConfig& cfg, backend::Backend& be);
// The same defaults and checks without building anything (ConfigError naming the field).
ModelConfig resolve_config(const ModelConfig& cfg);

}  // namespace keel::model
