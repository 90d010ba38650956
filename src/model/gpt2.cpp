// GPT-2: pre-LayerNorm blocks, learned positions, GELU (tanh) MLP, biases
// everywhere, LM head tied to the token embedding. Parameter names follow
// Hugging Face's GPT2Model; weights are stored (out, in) like torch.nn.Linear
// (Hugging Face's Conv1D stores (in, out): an exporter transposes them).
#include <cmath>

#include "model/causal_lm.h"
#include "model/model_factories.h"
#include "nn/modules.h"

namespace keel::model {
namespace {

class Gpt2 final : public CausalLM {
 public:
  Gpt2(const ModelConfig& c, backend::Backend& be) : CausalLM(c, be) {
    const float std = c.init_std, out_std = c.init_std / std::sqrt(2.f * float(c.n_layer));
    wte_ = nn::Embedding(params_, "wte", c.vocab_size, c.n_embd, std);
    wpe_ = nn::Embedding(params_, "wpe", c.max_seq_len, c.n_embd, std);
    nn::AttentionConfig ac;
    ac.n_embd = c.n_embd;
    ac.n_head = c.n_head;
    ac.n_kv_head = c.n_kv_head;
    ac.bias = true;
    ac.rope = false;
    ac.fused_qkv = true;
    ac.std = std;
    ac.out_std = out_std;
    blocks_.reserve(size_t(c.n_layer));
    for (int64_t l = 0; l < c.n_layer; ++l) {
      const std::string p = "h." + std::to_string(l);
      Block b;
      b.ln_1 = nn::LayerNorm(params_, p + ".ln_1", c.n_embd, c.norm_eps);
      b.attn = nn::CausalSelfAttention(params_, p + ".attn", ac, "c_attn", "c_proj");
      b.ln_2 = nn::LayerNorm(params_, p + ".ln_2", c.n_embd, c.norm_eps);
      b.mlp = nn::MLP(params_, p + ".mlp.c_fc", p + ".mlp.c_proj", c.n_embd, c.ffn_hidden, std,
                      out_std);
      blocks_.push_back(b);
    }
    ln_f_ = nn::LayerNorm(params_, "ln_f", c.n_embd, c.norm_eps);
  }

  double flops_per_token(int64_t seq_len) const override {
    const double C = double(cfg_.n_embd), F = double(cfg_.ffn_hidden), L = double(cfg_.n_layer);
    const double per_layer = C * 3 * C + C * C + 2 * C * F;  // c_attn, c_proj, c_fc, mlp.c_proj
    const double matmul_params = L * per_layer + double(cfg_.vocab_size) * C;  // + tied LM head
    return 6 * matmul_params + 12 * L * C * double(seq_len);
  }

 protected:
  nn::Value forward(nn::Tape& tape, const Tensor& ids) override {
    nn::Value x = nn::add(tape, wte_.forward(tape, ids), wpe_.forward(tape, positions(tape, ids)));
    for (int64_t l = 0; l < cfg_.n_layer; ++l) x = run_block(tape, l, x);
    x = ln_f_.forward(tape, x);
    return nn::linear_out(tape, x, *wte_.weight, nullptr, DType::F32);
  }

  nn::Value block(nn::Tape& tape, int64_t layer, const nn::Value& x) override {
    const Block& b = blocks_[size_t(layer)];
    nn::Value h = nn::add(tape, x, b.attn.forward(tape, b.ln_1.forward(tape, x)));
    return nn::add(tape, h, b.mlp.forward(tape, b.ln_2.forward(tape, h)));
  }

 private:
  struct Block {
    nn::LayerNorm ln_1;
    nn::CausalSelfAttention attn;
    nn::LayerNorm ln_2;
    nn::MLP mlp;
  };
  nn::Embedding wte_, wpe_;
  std::vector<Block> blocks_;
  nn::LayerNorm ln_f_;
};

}  // namespace

std::unique_ptr<Model> make_gpt2(const ModelConfig& cfg, backend::Backend& be) {
  return std::make_unique<Gpt2>(cfg, be);
}

}  // namespace keel::model
