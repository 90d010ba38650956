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
  std::string arch = "gpt2";  // "gpt2" | "llama"
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
};

class Model {
 public:
  virtual ~Model() = default;
  virtual const ModelConfig& config() const = 0;
  // Every trainable parameter, in a fixed order (the order of the checkpoint).
  virtual std::vector<nn::Parameter*> parameters() = 0;
  // Deterministic initialisation from a seed (each parameter has its own RNG stream).
  virtual void init(uint64_t seed) = 0;
  // After the f32 master weights change (optimizer, load), refresh compute copies.
  virtual void sync_compute_weights() = 0;

  // One micro-batch: forward, loss, backward. ids and targets are i32 (B, T);
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
