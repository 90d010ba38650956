// deepseek -> llama.cpp deepseek2 GGUF mapping (see gguf_deepseek_export.h).
// llama.cpp's deepseek2 rotates adjacent pairs of the rope part (its "norm"
// rope), as keel does, so no projection rows are permuted.
#include "store/gguf_deepseek_export.h"

#include <algorithm>
#include <cstring>
#include <optional>
#include <regex>

#include "core/error.h"

namespace keel::store {

namespace {

// llama.cpp's expert_gating_func values.
constexpr uint32_t kGatingSoftmax = 1, kGatingSigmoid = 2;

// Per-layer keel suffix -> GGUF tensor (".weight" on both sides).
constexpr std::pair<const char*, const char*> kBlockNames[] = {
    {"input_layernorm", "attn_norm"},
    {"post_attention_layernorm", "ffn_norm"},
    {"self_attn.q_proj", "attn_q"},
    {"self_attn.q_a_proj", "attn_q_a"},
    {"self_attn.q_a_layernorm", "attn_q_a_norm"},
    {"self_attn.q_b_proj", "attn_q_b"},
    {"self_attn.kv_a_proj_with_mqa", "attn_kv_a_mqa"},
    {"self_attn.kv_a_layernorm", "attn_kv_a_norm"},
    {"self_attn.o_proj", "attn_output"},
    {"mlp.gate_proj", "ffn_gate"},
    {"mlp.up_proj", "ffn_up"},
    {"mlp.down_proj", "ffn_down"},
    {"mlp.gate", "ffn_gate_inp"},
    {"mlp.experts.gate_proj", "ffn_gate_exps"},
    {"mlp.experts.up_proj", "ffn_up_exps"},
    {"mlp.experts.down_proj", "ffn_down_exps"},
    {"mlp.shared_experts.gate_proj", "ffn_gate_shexp"},
    {"mlp.shared_experts.up_proj", "ffn_up_shexp"},
    {"mlp.shared_experts.down_proj", "ffn_down_shexp"},
};

// kv_b_proj (NH * (nope + v), R): head h's rows are [k_nope_h | v_h]. Returns
// k_b (NH, R, nope) with k_b[h, r, j] = W[h (nope + v) + j, r], the transpose
// llama.cpp multiplies q_nope by to score against the latent directly, and
// v_b (NH, v, R) with v_b[h, i, r] = W[h (nope + v) + nope + i, r].
std::pair<Tensor, Tensor> split_kv_b(const Tensor& w, const model::ModelConfig& c) {
  const int64_t NH = c.n_head, nope = c.qk_nope_head_dim, v = c.v_head_dim, R = c.kv_lora_rank;
  if (w.rank() != 2 || w.dtype() != DType::F32 || w.dim(0) != NH * (nope + v) || w.dim(1) != R)
    fail("GGUF export: kv_b_proj {} is not f32 ({}, {})", w.desc(), NH * (nope + v), R);
  Tensor kb = Tensor::zeros(Shape{NH, R, nope}, DType::F32);
  Tensor vb = Tensor::zeros(Shape{NH, v, R}, DType::F32);
  const float* src = w.data<float>();
  float* k = kb.data<float>();
  float* vv = vb.data<float>();
  for (int64_t h = 0; h < NH; ++h) {
    const float* head = src + h * (nope + v) * R;
    for (int64_t j = 0; j < nope; ++j)
      for (int64_t r = 0; r < R; ++r) k[(h * R + r) * nope + j] = head[j * R + r];
    std::memcpy(vv + h * v * R, head + nope * R, size_t(v * R) * sizeof(float));
  }
  return {kb, vb};
}

// The inverse of split_kv_b.
Tensor merge_kv_b(const Tensor& kb, const Tensor& vb, const model::ModelConfig& c) {
  const int64_t NH = c.n_head, nope = c.qk_nope_head_dim, v = c.v_head_dim, R = c.kv_lora_rank;
  Tensor w = Tensor::zeros(Shape{NH * (nope + v), R}, DType::F32);
  const float* k = kb.data<float>();
  const float* vv = vb.data<float>();
  float* dst = w.data<float>();
  for (int64_t h = 0; h < NH; ++h) {
    float* head = dst + h * (nope + v) * R;
    for (int64_t j = 0; j < nope; ++j)
      for (int64_t r = 0; r < R; ++r) head[j * R + r] = k[(h * R + r) * nope + j];
    std::memcpy(head + nope * R, vv + h * v * R, size_t(v * R) * sizeof(float));
  }
  return w;
}

}  // namespace

void check_deepseek2_exportable(const model::ModelConfig& c) {
  if (c.capacity_factor > 0.f)
    fail<ConfigError>(
        "GGUF export: model.capacity_factor = {} drops tokens past an expert's capacity, which "
        "llama.cpp's deepseek2 cannot express (it never drops); export a model trained with "
        "model.capacity_factor = 0",
        c.capacity_factor);
  if (c.qk_nope_head_dim < 1)
    fail<ConfigError>(
        "GGUF export: model.qk_nope_head_dim = {}: llama.cpp's deepseek2 needs at least 1 "
        "non-rotary dimension per head",
        c.qk_nope_head_dim);
  // llama.cpp reads no q_lora_rank for the layer counts of its "lite" models
  // (26 or 27 layers, or 48 with a 128256-token vocabulary) and then expects attn_q.
  const bool lite =
      c.n_layer == 26 || c.n_layer == 27 || (c.n_layer == 48 && c.vocab_size == 128256);
  if (lite && c.q_lora_rank > 0)
    fail<ConfigError>(
        "GGUF export: model.q_lora_rank = {} with model.n_layer = {}: llama.cpp assumes no q "
        "compression at this layer count and would not load the q_a/q_b projections",
        c.q_lora_rank, c.n_layer);
  if (c.gating != "sigmoid" && c.gating != "softmax")
    fail<ConfigError>("GGUF export: model.gating '{}' has no llama.cpp expert_gating_func",
                      c.gating);
}

void add_deepseek2_metadata(io::GgufWriter& w, const model::ModelConfig& c) {
  const std::string a = std::string(kDeepseek2GgufArch) + ".";
  const auto u = [](int64_t x) { return uint32_t(x); };
  w.add_u32(a + "vocab_size", u(c.vocab_size));
  w.add_f32(a + "attention.layer_norm_rms_epsilon", c.norm_eps);
  w.add_f32(a + "rope.freq_base", c.rope_theta);
  w.add_u32(a + "rope.dimension_count", u(c.qk_rope_head_dim));
  // No rope scaling (freq_scale 1), where the yarn log multiplier scales
  // attention by 1 + mul * log(1 / freq_scale) = 1 whatever its value; loaders
  // of early 2025 require the key all the same.
  w.add_f32(a + "rope.scaling.yarn_log_multiplier", 0.f);
  // MLA as multi-query attention over the cached latent and rotary key.
  w.add_u32(a + "attention.head_count_kv", 1);
  // Written even when 0 (no q compression: attn_q): llama.cpp requires the key.
  w.add_u32(a + "attention.q_lora_rank", u(c.q_lora_rank));
  w.add_u32(a + "attention.kv_lora_rank", u(c.kv_lora_rank));
  w.add_u32(a + "attention.key_length", u(c.kv_lora_rank + c.qk_rope_head_dim));
  w.add_u32(a + "attention.value_length", u(c.kv_lora_rank));
  w.add_u32(a + "attention.key_length_mla", u(c.qk_nope_head_dim + c.qk_rope_head_dim));
  w.add_u32(a + "attention.value_length_mla", u(c.v_head_dim));
  w.add_u32(a + "leading_dense_block_count", u(c.n_dense_layers));
  w.add_u32(a + "expert_count", u(c.n_routed_experts));
  w.add_u32(a + "expert_used_count", u(c.top_k));
  w.add_u32(a + "expert_shared_count", u(std::max<int64_t>(c.n_shared_experts, 1)));
  w.add_u32(a + "expert_feed_forward_length", u(c.moe_ffn_hidden));
  w.add_f32(a + "expert_weights_scale", c.routed_scaling);
  w.add_bool(a + "expert_weights_norm", c.norm_topk_prob);
  w.add_u32(a + "expert_gating_func", c.gating == "sigmoid" ? kGatingSigmoid : kGatingSoftmax);
}

std::string deepseek2_gguf_name(const std::string& n) {
  static const std::pair<const char*, const char*> top[] = {
      {"model.embed_tokens.weight", "token_embd.weight"},
      {"model.norm.weight", "output_norm.weight"},
      {"lm_head.weight", "output.weight"}};
  for (const auto& [k, v] : top)
    if (n == k) return v;
  static const std::regex bias_re(R"(model\.layers\.(\d+)\.mlp\.gate\.e_score_correction_bias)");
  static const std::regex re(R"(model\.layers\.(\d+)\.(.+)\.weight)");
  std::smatch m;
  if (std::regex_match(n, m, bias_re)) return "blk." + m[1].str() + ".exp_probs_b.bias";
  if (std::regex_match(n, m, re))
    for (const auto& [k, v] : kBlockNames)
      if (m[2] == k) return "blk." + m[1].str() + "." + v + ".weight";
  fail("GGUF export: no deepseek2 GGUF name for parameter '{}'", n);
}

std::vector<io::NamedTensor> deepseek2_gguf_tensors(model::Model& m) {
  const model::ModelConfig& c = m.config();
  check_deepseek2_exportable(c);
  std::vector<io::NamedTensor> out;
  static const std::regex kv_b_re(R"(model\.layers\.(\d+)\.self_attn\.kv_b_proj\.weight)");
  static const std::regex gate_re(R"(model\.layers\.(\d+)\.mlp\.gate\.weight)");
  std::smatch mt;
  for (auto* p : m.parameters()) {
    if (std::regex_match(p->name, mt, kv_b_re)) {
      auto [kb, vb] = split_kv_b(p->value, c);
      out.push_back({"blk." + mt[1].str() + ".attn_k_b.weight", kb});
      out.push_back({"blk." + mt[1].str() + ".attn_v_b.weight", vb});
      continue;
    }
    out.push_back({deepseek2_gguf_name(p->name), p->value});
    if (c.n_shared_experts == 0 && std::regex_match(p->name, mt, gate_re)) {
      const std::string b = "blk." + mt[1].str() + ".";
      const int64_t C = c.n_embd, F = c.moe_ffn_hidden;
      out.push_back({b + "ffn_gate_shexp.weight", Tensor::zeros(Shape{F, C}, DType::F32)});
      out.push_back({b + "ffn_up_shexp.weight", Tensor::zeros(Shape{F, C}, DType::F32)});
      out.push_back({b + "ffn_down_shexp.weight", Tensor::zeros(Shape{C, F}, DType::F32)});
    }
  }
  for (auto& [name, t] : m.inference_buffers()) out.push_back({deepseek2_gguf_name(name), *t});
  return out;
}

std::optional<std::string> keel_name_from_deepseek2_gguf(const std::string& g) {
  static const std::pair<const char*, const char*> top[] = {
      {"token_embd.weight", "model.embed_tokens.weight"},
      {"output_norm.weight", "model.norm.weight"},
      {"output.weight", "lm_head.weight"}};
  for (const auto& [k, v] : top)
    if (g == k) return v;
  static const std::regex bias_re(R"(blk\.(\d+)\.exp_probs_b\.bias)");
  static const std::regex re(R"(blk\.(\d+)\.(.+)\.weight)");
  std::smatch m;
  if (std::regex_match(g, m, bias_re))
    return "model.layers." + m[1].str() + ".mlp.gate.e_score_correction_bias";
  if (std::regex_match(g, m, re))
    for (const auto& [k, v] : kBlockNames)
      if (m[2] == v) return "model.layers." + m[1].str() + "." + k + ".weight";
  return std::nullopt;
}

Tensor deepseek2_kv_b_from_gguf(const Tensor& k_b, const Tensor& v_b, const model::ModelConfig& c) {
  const int64_t NH = c.n_head, nope = c.qk_nope_head_dim, v = c.v_head_dim, R = c.kv_lora_rank;
  if (k_b.shape() != Shape{NH, R, nope} || v_b.shape() != Shape{NH, v, R})
    fail<IoError>("deepseek2: attn_k_b {} / attn_v_b {} do not match ({}, {}, {}) / ({}, {}, {})",
                  k_b.shape().str(), v_b.shape().str(), NH, R, nope, NH, v, R);
  return merge_kv_b(k_b, v_b, c);
}

}  // namespace keel::store
