#include "store/model_export.h"

#include <cstring>
#include <filesystem>
#include <optional>
#include <regex>
#include <span>

#include "backend/ops.h"
#include "core/error.h"
#include "data/byte_unicode.h"
#include "io/atomic_file.h"
#include "io/gguf_kquants.h"
#include "io/gguf_writer.h"
#include "store/gguf_deepseek_export.h"
#include "store/gguf_quant_mix.h"

namespace keel::store {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

Tensor permute_rope_rows(const Tensor& w, int64_t n_heads, bool to_hf) {
  if (w.rank() != 2 || w.dtype() != DType::F32 || n_heads <= 0 || w.dim(0) % n_heads != 0 ||
      (w.dim(0) / n_heads) % 2 != 0)
    fail("rope row permutation: weight {} does not split into {} heads of even size", w.desc(),
         n_heads);
  const int64_t HS = w.dim(0) / n_heads, C = w.dim(1), half = HS / 2;
  Tensor out = Tensor::zeros(w.shape(), DType::F32);
  const float* src = w.data<float>();
  float* dst = out.data<float>();
  for (int64_t h = 0; h < n_heads; ++h)
    for (int64_t i = 0; i < half; ++i)
      for (int64_t j = 0; j < 2; ++j) {
        const int64_t keel_row = h * HS + 2 * i + j, hf_row = h * HS + j * half + i;
        const int64_t from = to_hf ? keel_row : hf_row, to = to_hf ? hf_row : keel_row;
        std::memcpy(dst + to * C, src + from * C, size_t(C) * sizeof(float));
      }
  return out;
}

std::string hf_vocab_token(const data::Tokenizer& tok, int32_t id,
                           const std::vector<bool>& special) {
  return special[size_t(id)] ? tok.token_bytes(id)
                             : data::bytes_to_gpt2_unicode(tok.token_bytes(id));
}

std::vector<bool> special_mask(const data::Tokenizer& tok) {
  std::vector<bool> m(size_t(tok.vocab_size()), false);
  for (const auto& s : tok.special_tokens()) m[size_t(s.id)] = true;
  return m;
}

std::vector<std::string> merge_strings(const data::Tokenizer& tok) {
  std::vector<std::string> out;
  out.reserve(tok.merges().size());
  for (const auto& [l, r] : tok.merges())
    out.push_back(data::bytes_to_gpt2_unicode(tok.token_bytes(l)) + " " +
                  data::bytes_to_gpt2_unicode(tok.token_bytes(r)));
  return out;
}

void write_tokenizer_files(const std::string& dir, const data::Tokenizer& tok) {
  const auto special = special_mask(tok);
  json vocab = json::object();
  for (int32_t id = 0; id < tok.vocab_size(); ++id) vocab[hf_vocab_token(tok, id, special)] = id;
  io::write_file_atomic((fs::path(dir) / kHfVocabFile).string(), vocab.dump() + "\n");
  std::string merges = "#version: 0.2\n";
  const auto ms = merge_strings(tok);
  for (const auto& m : ms) merges += m + "\n";
  io::write_file_atomic((fs::path(dir) / kHfMergesFile).string(), merges);

  // The `tokenizers` library's own file: byte-level BPE with GPT-2's regex.
  json added = json::array();
  for (const auto& s : tok.special_tokens())
    added.push_back({{"id", s.id},
                     {"content", s.text},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", true},
                     {"special", true}});
  const json byte_level = {{"type", "ByteLevel"},
                           {"add_prefix_space", false},
                           {"trim_offsets", true},
                           {"use_regex", true}};
  json t = {{"version", "1.0"},
            {"truncation", nullptr},
            {"padding", nullptr},
            {"added_tokens", added},
            {"normalizer", nullptr},
            {"pre_tokenizer", byte_level},
            {"post_processor", byte_level},
            {"decoder", byte_level},
            {"model",
             {{"type", "BPE"},
              {"dropout", nullptr},
              {"unk_token", nullptr},
              {"continuing_subword_prefix", ""},
              {"end_of_word_suffix", ""},
              {"fuse_unk", false},
              {"byte_fallback", false},
              {"vocab", vocab},
              {"merges", ms}}}};
  io::write_file_atomic((fs::path(dir) / kHfTokenizerFile).string(), t.dump() + "\n");
  json tc = {{"tokenizer_class", "GPT2Tokenizer"},
             {"add_prefix_space", false},
             {"model_max_length", 1000000000}};
  if (tok.eot_id() >= 0)
    for (const char* k : {"bos_token", "eos_token", "unk_token"})
      tc[k] = std::string(data::kEndOfText);
  io::write_file_atomic((fs::path(dir) / kHfTokenizerConfigFile).string(), tc.dump(2) + "\n");
}

// keel's names <-> GGUF's, per architecture: whole-model tensors, then the
// per-block part "model.layers.N.<keel>.weight" <-> "blk.N.<gguf>.weight".
using NamePairs = std::pair<const char*, const char*>;
constexpr NamePairs kLlamaTop[] = {{"model.embed_tokens.weight", "token_embd.weight"},
                                   {"model.norm.weight", "output_norm.weight"},
                                   {"lm_head.weight", "output.weight"}};
constexpr NamePairs kLlamaBlock[] = {
    {"input_layernorm", "attn_norm"},    {"self_attn.q_proj", "attn_q"},
    {"self_attn.k_proj", "attn_k"},      {"self_attn.v_proj", "attn_v"},
    {"self_attn.o_proj", "attn_output"}, {"post_attention_layernorm", "ffn_norm"},
    {"mlp.gate_proj", "ffn_gate"},       {"mlp.up_proj", "ffn_up"},
    {"mlp.down_proj", "ffn_down"}};
constexpr NamePairs kGpt2Top[] = {{"wte.weight", "token_embd.weight"},
                                  {"wpe.weight", "position_embd.weight"},
                                  {"ln_f.weight", "output_norm.weight"},
                                  {"ln_f.bias", "output_norm.bias"}};
constexpr NamePairs kGpt2Block[] = {{"ln_1", "attn_norm"},          {"attn.c_attn", "attn_qkv"},
                                    {"attn.c_proj", "attn_output"}, {"ln_2", "ffn_norm"},
                                    {"mlp.c_fc", "ffn_up"},         {"mlp.c_proj", "ffn_down"}};

// Maps `n` through the tables in either direction (to_gguf: keel -> GGUF).
std::optional<std::string> map_name(const std::string& arch, const std::string& n, bool to_gguf) {
  const bool llama = arch == "llama";
  if (!llama && arch != "gpt2") return std::nullopt;
  const auto top =
      llama ? std::span<const NamePairs>(kLlamaTop) : std::span<const NamePairs>(kGpt2Top);
  const auto blk =
      llama ? std::span<const NamePairs>(kLlamaBlock) : std::span<const NamePairs>(kGpt2Block);
  for (const auto& [k, g] : top)
    if (n == (to_gguf ? k : g)) return std::string(to_gguf ? g : k);
  // llama's blocks carry weights only, gpt2's weights and biases.
  static const std::regex keel_llama(R"(model\.layers\.(\d+)\.(.+)\.(weight))"),
      keel_gpt2(R"(h\.(\d+)\.(.+)\.(weight|bias))"), gguf_llama(R"(blk\.(\d+)\.(.+)\.(weight))"),
      gguf_gpt2(R"(blk\.(\d+)\.(.+)\.(weight|bias))");
  const std::regex& re =
      to_gguf ? (llama ? keel_llama : keel_gpt2) : (llama ? gguf_llama : gguf_gpt2);
  std::smatch m;
  if (!std::regex_match(n, m, re)) return std::nullopt;
  for (const auto& [k, g] : blk) {
    if (m[2] != (to_gguf ? k : g)) continue;
    const std::string part = to_gguf ? g : k, suffix = "." + m[3].str();
    if (to_gguf) return "blk." + m[1].str() + "." + part + suffix;
    return (llama ? "model.layers." : "h.") + m[1].str() + "." + part + suffix;
  }
  return std::nullopt;
}

// keel parameter name -> GGUF tensor name, per architecture.
std::string map_gguf_name(const std::string& arch, const std::string& n) {
  if (arch == "deepseek") return deepseek2_gguf_name(n);
  if (auto g = map_name(arch, n, true)) return *g;
  fail("GGUF export: no GGUF name for parameter '{}' of architecture '{}'", n, arch);
}

void add_tokenizer(io::GgufWriter& w, const data::Tokenizer& tok, int64_t model_vocab) {
  // llama.cpp's token types: 1 normal, 3 control, 5 unused.
  const auto special = special_mask(tok);
  std::vector<std::string> tokens;
  std::vector<int32_t> types;
  tokens.reserve(size_t(model_vocab));
  for (int32_t id = 0; id < tok.vocab_size(); ++id) {
    tokens.push_back(hf_vocab_token(tok, id, special));
    types.push_back(special[size_t(id)] ? 3 : 1);
  }
  // Rows of the embedding beyond the tokenizer (a padded vocabulary) get
  // placeholder tokens that BPE never produces.
  for (int64_t id = tok.vocab_size(); id < model_vocab; ++id) {
    tokens.push_back("[PAD" + std::to_string(id) + "]");
    types.push_back(5);
  }
  w.add_string("tokenizer.ggml.model", "gpt2");
  w.add_string("tokenizer.ggml.pre", "gpt-2");
  w.add_string_array("tokenizer.ggml.tokens", tokens);
  w.add_i32_array("tokenizer.ggml.token_type", types);
  w.add_string_array("tokenizer.ggml.merges", merge_strings(tok));
  if (tok.eot_id() >= 0) {
    w.add_u32("tokenizer.ggml.bos_token_id", uint32_t(tok.eot_id()));
    w.add_u32("tokenizer.ggml.eos_token_id", uint32_t(tok.eot_id()));
  }
  w.add_bool("tokenizer.ggml.add_bos_token", false);
  w.add_bool("tokenizer.ggml.add_eos_token", false);
}

}  // namespace

nlohmann::json hf_config_json(const model::ModelConfig& c, const data::Tokenizer& tok) {
  const int32_t eot = tok.eot_id();
  json j;
  if (c.arch == "gpt2") {
    j = {{"architectures", {"GPT2LMHeadModel"}},
         {"model_type", "gpt2"},
         {"vocab_size", c.vocab_size},
         {"n_positions", c.max_seq_len},
         {"n_ctx", c.max_seq_len},
         {"n_embd", c.n_embd},
         {"n_layer", c.n_layer},
         {"n_head", c.n_head},
         {"n_inner", c.ffn_hidden},
         {"activation_function", "gelu_new"},
         {"layer_norm_epsilon", c.norm_eps},
         {"tie_word_embeddings", true},
         {"resid_pdrop", 0.0},
         {"embd_pdrop", 0.0},
         {"attn_pdrop", 0.0}};
  } else if (c.arch == "llama") {
    j = {{"architectures", {"LlamaForCausalLM"}},
         {"model_type", "llama"},
         {"vocab_size", c.vocab_size},
         {"hidden_size", c.n_embd},
         {"intermediate_size", c.ffn_hidden},
         {"num_hidden_layers", c.n_layer},
         {"num_attention_heads", c.n_head},
         {"num_key_value_heads", c.n_kv_head},
         {"head_dim", c.n_embd / c.n_head},
         {"max_position_embeddings", c.max_seq_len},
         {"rms_norm_eps", c.norm_eps},
         {"rope_theta", c.rope_theta},
         {"hidden_act", "silu"},
         {"attention_bias", false},
         {"mlp_bias", false},
         {"tie_word_embeddings", false}};
  } else {
    fail("export: architecture '{}' has no Hugging Face mapping", c.arch);
  }
  j["torch_dtype"] = "float32";
  if (eot >= 0) {
    j["bos_token_id"] = eot;
    j["eos_token_id"] = eot;
  }
  return j;
}

bool is_gpt2_conv1d_weight(const std::string& name) {
  static const std::regex re(
      R"(h\.\d+\.(attn\.c_attn|attn\.c_proj|mlp\.c_fc|mlp\.c_proj)\.weight)");
  return std::regex_match(name, re);
}

Tensor transpose_2d(const Tensor& w) {
  const int64_t R = w.dim(0), C = w.dim(1);
  Tensor out = Tensor::zeros(Shape{C, R}, DType::F32);
  const float* src = w.data<float>();
  float* dst = out.data<float>();
  for (int64_t r = 0; r < R; ++r)
    for (int64_t c = 0; c < C; ++c) dst[c * R + r] = src[r * C + c];
  return out;
}

Tensor rope_rows_keel_to_hf(const Tensor& w, int64_t n_heads) {
  return permute_rope_rows(w, n_heads, true);
}
Tensor rope_rows_hf_to_keel(const Tensor& w, int64_t n_heads) {
  return permute_rope_rows(w, n_heads, false);
}

std::vector<io::NamedTensor> hf_tensors(model::Model& model) {
  const auto& c = model.config();
  std::vector<io::NamedTensor> out;
  for (auto* p : model.parameters()) {
    Tensor t = p->value;
    if (c.arch == "gpt2" && is_gpt2_conv1d_weight(p->name)) {
      t = transpose_2d(t);
    } else if (c.arch == "llama" && p->name.ends_with(".self_attn.q_proj.weight")) {
      t = rope_rows_keel_to_hf(t, c.n_head);
    } else if (c.arch == "llama" && p->name.ends_with(".self_attn.k_proj.weight")) {
      t = rope_rows_keel_to_hf(t, c.n_kv_head);
    } else if (c.arch != "gpt2" && c.arch != "llama") {
      fail("export: architecture '{}' has no Hugging Face mapping", c.arch);
    }
    out.push_back({p->name, t});
  }
  return out;
}

void export_hf_folder(const std::string& dir, model::Model& model, const data::Tokenizer& tok) {
  io::make_dirs(dir);
  const json cfg = hf_config_json(model.config(), tok);
  io::write_safetensors((fs::path(dir) / kHfWeightsFile).string(), hf_tensors(model),
                        {{"format", "pt"}});
  io::write_file_atomic((fs::path(dir) / kHfConfigFile).string(), cfg.dump(2) + "\n");
  write_tokenizer_files(dir, tok);
}

namespace {

std::optional<KQuantPreset> kquant_preset(GgufWeights w) {
  if (w == GgufWeights::Q4_K_M) return KQuantPreset::Q4_K_M;
  if (w == GgufWeights::Q5_K_M) return KQuantPreset::Q5_K_M;
  if (w == GgufWeights::Q6_K) return KQuantPreset::Q6_K;
  return std::nullopt;
}

// A k-quant preset: each tensor in the type llama.cpp's quantizer picks for it.
void add_kquant_tensors(io::GgufWriter& w, const std::vector<io::NamedTensor>& tensors,
                        KQuantPreset preset, const model::ModelConfig& c, backend::Backend& be) {
  std::vector<MixTensor> mix_in;
  for (const auto& [name, v] : tensors) mix_in.push_back({name, v.shape()});
  const auto types = kquant_mix(preset, mix_in, int(c.n_layer), int(c.n_routed_experts));
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& [name, v] = tensors[i];
    const io::GgmlType type = types[i];
    if (type == io::GgmlType::F32) {
      w.add_tensor(name, v);
    } else if (type == io::GgmlType::F16) {
      w.add_tensor(name, v.to(DType::F16));
    } else if (type == io::GgmlType::Q8_0) {
      const int64_t cols = v.dim(v.rank() - 1);
      Tensor q = Tensor::zeros(Shape{v.numel() / cols, cols}, DType::Q8_0);
      Tensor scale;
      ops::quantize(be, v.reshape(Shape{v.numel() / cols, cols}), q, scale);
      w.add_tensor(name, q.reshape(v.shape()));
    } else {
      const std::vector<float> f = v.to_f32_vector();
      w.add_tensor_bytes(name, v.shape(), type,
                         io::ggml_quantize(type, f.data(), int64_t(f.size())));
    }
  }
}

}  // namespace

GgufWeights gguf_weights_from_name(const std::string& s) {
  if (s == "f32") return GgufWeights::F32;
  if (s == "f16") return GgufWeights::F16;
  if (s == "q8_0") return GgufWeights::Q8_0;
  if (s == "q4_0") return GgufWeights::Q4_0;
  if (s == "q4_k_m") return GgufWeights::Q4_K_M;
  if (s == "q5_k_m") return GgufWeights::Q5_K_M;
  if (s == "q6_k") return GgufWeights::Q6_K;
  fail("GGUF weight type '{}' is not one of f32, f16, q8_0, q4_0, q4_k_m, q5_k_m, q6_k", s);
}

std::string gguf_tensor_name(const std::string& arch, const std::string& keel_name) {
  return map_gguf_name(arch, keel_name);
}

std::optional<std::string> keel_name_from_gguf(const std::string& arch,
                                               const std::string& gguf_name) {
  return map_name(arch, gguf_name, false);
}

void export_gguf(const std::string& path, model::Model& model, const data::Tokenizer& tok,
                 GgufWeights weights, backend::Backend& be) {
  const auto& c = model.config();
  if (c.vocab_size < tok.vocab_size())
    fail("GGUF export: the model's vocabulary ({}) is smaller than the tokenizer's ({})",
         c.vocab_size, tok.vocab_size());
  if (c.arch != "llama" && c.arch != "gpt2" && c.arch != "deepseek")
    fail("GGUF export: architecture '{}' is not supported", c.arch);
  // The tensors first: a configuration GGUF cannot express fails before any work.
  std::vector<io::NamedTensor> tensors;
  if (c.arch == "deepseek") {
    tensors = deepseek2_gguf_tensors(model);
  } else {
    for (auto* p : model.parameters())
      tensors.push_back({map_gguf_name(c.arch, p->name), p->value});
    // GPT-2 ties its head to the embedding; llama.cpp's converter still writes
    // output.weight (a copy), and loaders before 2025 require it.
    if (c.arch == "gpt2")
      for (auto* p : model.parameters())
        if (p->name == "wte.weight") tensors.push_back({"output.weight", p->value});
  }
  io::GgufWriter w;
  const std::string a = c.arch == "deepseek" ? kDeepseek2GgufArch : c.arch;
  w.add_string("general.architecture", a);
  w.add_string("general.name", "keel-" + c.arch);
  // llama.cpp's file types: 0 all f32, 1 mostly f16, 2 mostly q4_0, 7 mostly q8_0,
  // 15 Q4_K_M, 17 Q5_K_M, 18 Q6_K.
  static constexpr uint32_t kFileType[] = {0, 1, 7, 2, 15, 17, 18};
  w.add_u32("general.file_type", kFileType[int(weights)]);
  w.add_u32("general.quantization_version", 2);
  w.add_u32(a + ".context_length", uint32_t(c.max_seq_len));
  w.add_u32(a + ".embedding_length", uint32_t(c.n_embd));
  w.add_u32(a + ".feed_forward_length", uint32_t(c.ffn_hidden));
  w.add_u32(a + ".block_count", uint32_t(c.n_layer));
  w.add_u32(a + ".attention.head_count", uint32_t(c.n_head));
  if (a == "llama") {
    w.add_u32(a + ".attention.head_count_kv", uint32_t(c.n_kv_head));
    w.add_f32(a + ".attention.layer_norm_rms_epsilon", c.norm_eps);
    w.add_f32(a + ".rope.freq_base", c.rope_theta);
    w.add_u32(a + ".rope.dimension_count", uint32_t(c.n_embd / c.n_head));
    w.add_u32(a + ".vocab_size", uint32_t(c.vocab_size));
  } else if (a == "gpt2") {
    w.add_f32(a + ".attention.layer_norm_epsilon", c.norm_eps);
  } else {
    add_deepseek2_metadata(w, c);
  }
  add_tokenizer(w, tok, c.vocab_size);
  if (const auto preset = kquant_preset(weights)) {
    add_kquant_tensors(w, tensors, *preset, c, be);
    w.write(path);
    return;
  }
  for (const auto& [name, v] : tensors) {
    // Matrices (and stacks of them, the experts) take the weight type; the
    // MoE router stays f32 as in llama.cpp's converter: it decides which
    // experts run, and a flipped choice costs more than its size saves.
    Tensor t = v;
    if (v.rank() >= 2 && weights != GgufWeights::F32 && !name.ends_with(".ffn_gate_inp.weight")) {
      const int64_t cols = v.dim(v.rank() - 1);
      const bool blocked = weights == GgufWeights::Q8_0 || weights == GgufWeights::Q4_0;
      if (blocked && cols % kQBlock == 0) {
        const DType qdt = weights == GgufWeights::Q8_0 ? DType::Q8_0 : DType::Q4_0;
        Tensor q = Tensor::zeros(Shape{v.numel() / cols, cols}, qdt);
        Tensor scale;
        ops::quantize(be, v.reshape(Shape{v.numel() / cols, cols}), q, scale);
        t = q.reshape(v.shape());
      } else {
        t = v.to(DType::F16);
      }
    }
    w.add_tensor(name, t);
  }
  w.write(path);
}

}  // namespace keel::store
