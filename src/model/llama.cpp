// Llama: RMSNorm, rotary positions on adjacent pairs (x[2i], x[2i+1]), SwiGLU
// MLP, grouped-query attention (n_kv_head), no biases, untied LM head.
// Parameter names follow Hugging Face's LlamaForCausalLM. Hugging Face's
// rotary layout pairs x[i] with x[i + HS/2]: an exporter permutes the rows of
// q_proj and k_proj per head (as Hugging Face's own conversion script does).
#include <cmath>

#include "model/causal_lm.h"
#include "model/model_factories.h"
#include "nn/modules.h"

namespace keel::model {
namespace {

class Llama final : public CausalLM {
 public:
  Llama(const ModelConfig& c, backend::Backend& be) : CausalLM(c, be) {
    const float std = c.init_std, out_std = c.init_std / std::sqrt(2.f * float(c.n_layer));
    embed_ = nn::Embedding(params_, "model.embed_tokens", c.vocab_size, c.n_embd, std);
    nn::AttentionConfig ac;
    ac.n_embd = c.n_embd;
    ac.n_head = c.n_head;
    ac.n_kv_head = c.n_kv_head;
    ac.bias = false;
    ac.rope = true;
    ac.rope_theta = c.rope_theta;
    ac.fused_qkv = false;
    ac.std = std;
    ac.out_std = out_std;
    blocks_.reserve(size_t(c.n_layer));
    for (int64_t l = 0; l < c.n_layer; ++l) {
      const std::string p = "model.layers." + std::to_string(l);
      Block b;
      b.input_norm = nn::RMSNorm(params_, p + ".input_layernorm", c.n_embd, c.norm_eps);
      b.attn = nn::CausalSelfAttention(params_, p + ".self_attn", ac, "qkv_proj", "o_proj");
      b.post_norm = nn::RMSNorm(params_, p + ".post_attention_layernorm", c.n_embd, c.norm_eps);
      b.mlp = nn::SwiGLUMLP(params_, p + ".mlp", c.n_embd, c.ffn_hidden, std, out_std);
      blocks_.push_back(b);
    }
    norm_ = nn::RMSNorm(params_, "model.norm", c.n_embd, c.norm_eps);
    lm_head_ = nn::Linear(params_, "lm_head", c.n_embd, c.vocab_size, false, std);
  }

  double flops_per_token(int64_t seq_len) const override {
    const double C = double(cfg_.n_embd), F = double(cfg_.ffn_hidden), L = double(cfg_.n_layer);
    const double kv = double(cfg_.n_kv_head) * C / double(cfg_.n_head);
    const double per_layer = C * C * 2 + 2 * C * kv + 3 * C * F;  // q, o, k, v, gate, up, down
    const double matmul_params = L * per_layer + double(cfg_.vocab_size) * C;  // + lm_head
    return 6 * matmul_params + 12 * L * C * double(seq_len);
  }

 protected:
  nn::Value forward(nn::Tape& tape, const Tensor& ids) override {
    nn::Value x = embed_.forward(tape, ids);
    for (int64_t l = 0; l < cfg_.n_layer; ++l) x = run_block(tape, l, x);
    x = norm_.forward(tape, x);
    return nn::linear_out(tape, x, *lm_head_.weight, nullptr, DType::F32);
  }

  nn::Value block(nn::Tape& tape, int64_t layer, const nn::Value& x) override {
    const Block& b = blocks_[size_t(layer)];
    nn::Value h = nn::add(tape, x, b.attn.forward(tape, b.input_norm.forward(tape, x)));
    return nn::add(tape, h, b.mlp.forward(tape, b.post_norm.forward(tape, h)));
  }

 private:
  struct Block {
    nn::RMSNorm input_norm;
    nn::CausalSelfAttention attn;
    nn::RMSNorm post_norm;
    nn::SwiGLUMLP mlp;
  };
  nn::Embedding embed_;
  std::vector<Block> blocks_;
  nn::RMSNorm norm_;
  nn::Linear lm_head_;
};

}  // namespace

std::unique_ptr<Model> make_llama(const ModelConfig& cfg, backend::Backend& be) {
  return std::make_unique<Llama>(cfg, be);
}

}  // namespace keel::model
