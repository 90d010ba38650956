// DeepSeek (V2/V3 style): RMSNorm pre-norm blocks of multi-head latent
// attention and a feed-forward that is a dense SwiGLU for the first
// n_dense_layers and DeepSeekMoE after; rotary positions on the decoupled key
// part (adjacent pairs, as llama here); untied LM head. Parameter names follow
// Hugging Face's DeepseekV2ForCausalLM, except that each layer's routed
// experts are stacked: mlp.experts.{gate,up,down}_proj.weight (E, out, in).
#include <cmath>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "backend/device_tensor.h"
#include "core/error.h"
#include "core/rng.h"
#include "model/causal_lm.h"
#include "model/deepseek.h"
#include "model/deepseek_mla.h"
#include "model/deepseek_moe.h"
#include "model/model_factories.h"

namespace keel::model {
namespace {

class DeepSeek final : public CausalLM {
 public:
  DeepSeek(const ModelConfig& c, backend::Backend& be) : CausalLM(c, be) {
    const float std = c.init_std, out_std = c.init_std / std::sqrt(2.f * float(c.n_layer));
    embed_ = nn::Embedding(params_, "model.embed_tokens", c.vocab_size, c.n_embd, std);
    blocks_.reserve(size_t(c.n_layer));
    // One f64 balance-loss slot per MoE layer, in the backend's memory: read
    // back once per micro-batch.
    const int64_t n_moe = std::max<int64_t>(c.n_layer - c.n_dense_layers, 0);
    aux_ = backend::empty_on(be, Shape{std::max<int64_t>(2 * n_moe, 2)}, DType::I32,
                             "balance loss per layer");
    int64_t moe_layer = 0;
    for (int64_t l = 0; l < c.n_layer; ++l) {
      const std::string p = "model.layers." + std::to_string(l);
      Block b;
      b.input_norm = nn::RMSNorm(params_, p + ".input_layernorm", c.n_embd, c.norm_eps);
      b.attn = MlaAttention(params_, p + ".self_attn", c, std, out_std);
      b.post_norm = nn::RMSNorm(params_, p + ".post_attention_layernorm", c.n_embd, c.norm_eps);
      if (l < c.n_dense_layers) {
        b.mlp = nn::SwiGLUMLP(params_, p + ".mlp", c.n_embd, c.ffn_hidden, std, out_std);
      } else {
        b.moe = std::make_unique<MoeFeedForward>(params_, p + ".mlp", c, std, out_std,
                                                 static_cast<double*>(aux_.raw()) + moe_layer++);
        state_.emplace_back(p + ".mlp.gate.e_score_correction_bias", &b.moe->bias());
        inference_.emplace_back(p + ".mlp.gate.e_score_correction_bias", &b.moe->bias());
        state_.emplace_back(p + ".mlp.gate.balance_integral", &b.moe->integral());
        state_.emplace_back(p + ".mlp.expert_load", &b.moe->load());
      }
      blocks_.push_back(std::move(b));
    }
    norm_ = nn::RMSNorm(params_, "model.norm", c.n_embd, c.norm_eps);
    lm_head_ = nn::Linear(params_, "lm_head", c.n_embd, c.vocab_size, false, std);
  }

  // Active parameters only: top_k routed plus the shared experts per token.
  double flops_per_token(int64_t seq_len) const override {
    const ModelConfig& c = cfg_;
    const double C = double(c.n_embd), NH = double(c.n_head);
    const double D = double(c.qk_nope_head_dim + c.qk_rope_head_dim), V = double(c.v_head_dim);
    const double R = double(c.kv_lora_rank), Q = double(c.q_lora_rank);
    const double q = c.q_lora_rank > 0 ? C * Q + Q * NH * D : C * NH * D;
    const double attn = q + C * (R + double(c.qk_rope_head_dim)) +
                        R * NH * (double(c.qk_nope_head_dim) + V) + NH * V * C;
    const double dense = 3 * C * double(c.ffn_hidden);
    const double moe = C * double(c.n_routed_experts) +
                       3 * C * double(c.moe_ffn_hidden) * double(c.top_k + c.n_shared_experts);
    const double L = double(c.n_layer), Ld = double(c.n_dense_layers);
    const double matmul = L * attn + Ld * dense + (L - Ld) * moe + double(c.vocab_size) * C;
    return 6 * matmul + 6 * L * NH * (D + V) * double(seq_len);
  }

  float forward_backward(const Tensor& ids, const Tensor& targets, float grad_scale) override {
    // The routing jitter of a micro-batch follows from its tokens: the same
    // batch (a resumed run, a recomputed forward) routes the same way, with
    // no counter to checkpoint.
    const uint64_t tokens_hash = XXH3_64bits(ids.raw(), ids.nbytes());
    for (size_t l = 0; l < blocks_.size(); ++l)
      if (blocks_[l].moe) blocks_[l].moe->begin_micro_batch(Rng(tokens_hash, l).u64(0));
    train_ = true;
    grad_scale_ = grad_scale;
    backend::zero(be_, aux_);
    float loss = 0;
    try {
      loss = CausalLM::forward_backward(ids, targets, grad_scale);
    } catch (...) {
      train_ = false;
      throw;
    }
    train_ = false;
    if (cfg_.aux_loss_alpha <= 0.f) return loss;
    const Tensor aux = backend::to_host(be_, aux_);
    double aux_loss = 0;
    for (int64_t l = 0; l < aux.numel() / 2; ++l)
      aux_loss += static_cast<const double*>(aux.raw())[l];
    return float(double(loss) + aux_loss);
  }

  std::vector<std::pair<std::string, Tensor*>> state_buffers() override { return state_; }
  std::vector<std::pair<std::string, Tensor*>> inference_buffers() override { return inference_; }

  std::vector<Tensor> last_routing() const {
    std::vector<Tensor> out;
    for (const Block& b : blocks_)
      if (b.moe) out.push_back(backend::to_host(be_, b.moe->last_idx()).clone());
    return out;
  }

  void on_step_end(bool applied) override {
    for (Block& b : blocks_)
      if (b.moe) b.moe->end_step(applied);
  }

  std::vector<std::pair<std::string, double>> take_eval_statistics() override {
    double sum = 0;
    int64_t n = 0;
    for (Block& b : blocks_)
      if (b.moe) {
        const double r = b.moe->take_eval_load_max_over_mean();
        if (r > 0) sum += r, ++n;
      }
    if (n == 0) return {};
    return {{"val_expert_load_max_mean", sum / double(n)}};
  }

  std::vector<std::pair<std::string, double>> step_statistics() const override {
    std::vector<std::pair<std::string, double>> out;
    double sum = 0, worst = 0, ent = 0;
    int64_t n = 0, dropped = 0;
    for (size_t l = 0; l < blocks_.size(); ++l) {
      const MoeFeedForward* m = blocks_[l].moe.get();
      if (!m) continue;
      const double r = m->load_max_over_mean();
      out.emplace_back("expert_load_max_mean.layer" + std::to_string(l), r);
      sum += r;
      worst = std::max(worst, r);
      ent += m->mean_entropy();
      dropped += m->dropped();
      ++n;
    }
    if (n == 0) return out;
    out.insert(out.begin(), {{"expert_load_max_mean", sum / double(n)},
                             {"expert_load_max_mean_worst", worst},
                             {"routing_entropy", ent / double(n)}});
    if (cfg_.capacity_factor > 0.f) out.emplace_back("dropped_tokens", double(dropped));
    return out;
  }

 protected:
  nn::Value forward(nn::Tape& tape, const Tensor& ids) override {
    nn::Value x = embed_.forward(tape, ids);
    for (int64_t l = 0; l < cfg_.n_layer; ++l) x = run_block(tape, l, x);
    x = norm_.forward(tape, x);
    return nn::linear_out(tape, x, *lm_head_.weight, nullptr, DType::F32);
  }

  nn::Value block(nn::Tape& tape, int64_t layer, const nn::Value& x) override {
    Block& b = blocks_[size_t(layer)];
    nn::Value h = nn::add(tape, x, b.attn.forward(tape, b.input_norm.forward(tape, x)));
    const nn::Value hn = b.post_norm.forward(tape, h);
    const nn::Value f =
        b.moe ? b.moe->forward(tape, hn, train_, grad_scale_) : b.mlp.forward(tape, hn);
    return nn::add(tape, h, f);
  }

 private:
  struct Block {
    nn::RMSNorm input_norm;
    MlaAttention attn;
    nn::RMSNorm post_norm;
    nn::SwiGLUMLP mlp;                    // dense layers
    std::unique_ptr<MoeFeedForward> moe;  // MoE layers
  };
  nn::Embedding embed_;
  std::vector<Block> blocks_;
  nn::RMSNorm norm_;
  nn::Linear lm_head_;
  std::vector<std::pair<std::string, Tensor*>> state_, inference_;
  Tensor aux_;  // f64 (as i32 pairs) per MoE layer: the micro-batch's balance loss
  bool train_ = false;
  float grad_scale_ = 1.f;
};

}  // namespace

std::vector<Tensor> deepseek_last_routing(Model& m) {
  auto* d = dynamic_cast<DeepSeek*>(&m);
  if (!d) fail("deepseek_last_routing: model is '{}', not deepseek", m.config().arch);
  return d->last_routing();
}

int64_t mla_cache_bytes_per_token(const ModelConfig& c, int64_t bytes_per_elem) {
  return c.n_layer * (c.kv_lora_rank + c.qk_rope_head_dim) * bytes_per_elem;
}

int64_t mha_cache_bytes_per_token(const ModelConfig& c, int64_t bytes_per_elem) {
  return c.n_layer * 2 * c.n_embd * bytes_per_elem;
}

std::unique_ptr<Model> make_deepseek(const ModelConfig& cfg, backend::Backend& be) {
  return std::make_unique<DeepSeek>(cfg, be);
}

}  // namespace keel::model
