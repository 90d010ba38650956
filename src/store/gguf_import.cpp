#include "store/gguf_import.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include "backend/device_tensor.h"
#include "core/error.h"
#include "io/gguf_reader.h"
#include "nn/parameter.h"
#include "store/gguf_deepseek_export.h"
#include "store/model_export.h"

namespace keel::store {

namespace {

// llama.cpp's token types: 3 control (a special token), 5 unused (a row of a
// padded embedding that no text maps to).
constexpr int64_t kTokenControl = 3, kTokenUnused = 5;

data::Tokenizer gguf_tokenizer(const io::GgufFile& f) {
  const std::string& p = f.path();
  const std::string model = f.get_string("tokenizer.ggml.model");
  if (model != "gpt2")
    fail<IoError>("{}: tokenizer.ggml.model = '{}': keel reads byte-level BPE ('gpt2') only", p,
                  model);
  // Another pre-tokenizer splits text differently: the ids would not be the ones
  // the model was trained on.
  if (f.has("tokenizer.ggml.pre") && f.get_string("tokenizer.ggml.pre") != "gpt-2")
    fail<IoError>("{}: tokenizer.ggml.pre = '{}': keel's pre-tokenizer is GPT-2's ('gpt-2')", p,
                  f.get_string("tokenizer.ggml.pre"));
  for (const char* k : {"tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_eos_token"})
    if (f.has(k) && f.get_bool(k))
      fail<IoError>("{}: {} = true: keel never adds that token to a prompt", p, k);
  std::vector<std::string> tokens = f.get_string_array("tokenizer.ggml.tokens");
  std::vector<int64_t> types(tokens.size(), 1);
  if (f.has("tokenizer.ggml.token_type")) {
    types = f.get_int_array("tokenizer.ggml.token_type");
    if (types.size() != tokens.size())
      fail<IoError>("{}: tokenizer.ggml.token_type has {} entries for {} tokens", p, types.size(),
                    tokens.size());
  }
  // Unused rows may only pad the end of the vocabulary.
  size_t n = tokens.size();
  while (n > 0 && types[n - 1] == kTokenUnused) --n;
  for (size_t i = 0; i < n; ++i)
    if (types[i] == kTokenUnused)
      fail<IoError>("{}: tokenizer.ggml.token_type[{}] is 'unused' inside the vocabulary", p, i);
  tokens.resize(n);
  std::vector<bool> special(n);
  for (size_t i = 0; i < n; ++i) special[i] = types[i] == kTokenControl;
  const std::vector<std::string> none;
  const auto& merges =
      f.has("tokenizer.ggml.merges") ? f.get_string_array("tokenizer.ggml.merges") : none;
  return data::Tokenizer::from_gpt2_strings(tokens, special, merges, p);
}

// The keys every architecture shares (`a` is "<general.architecture>."); for
// rotary models also the rms epsilon, the rope base and no rope scaling.
model::ModelConfig shared_config(const io::GgufFile& f, const std::string& a, bool rotary) {
  model::ModelConfig c;
  c.n_layer = f.get_int(a + "block_count");
  c.n_embd = f.get_int(a + "embedding_length");
  c.n_head = f.get_int(a + "attention.head_count");
  c.ffn_hidden = f.get_int(a + "feed_forward_length");
  c.max_seq_len = f.get_int(a + "context_length");
  if (!rotary) return c;
  c.norm_eps = float(f.get_float(a + "attention.layer_norm_rms_epsilon"));
  if (f.has(a + "rope.freq_base")) c.rope_theta = float(f.get_float(a + "rope.freq_base"));
  const std::string st = a + "rope.scaling.type";
  if (f.has(st) && f.get_string(st) != "none")
    fail<IoError>("{}: {} = '{}': keel has no rope scaling", f.path(), st, f.get_string(st));
  return c;
}

model::ModelConfig gguf_config(const io::GgufFile& f, const std::string& arch) {
  const std::string& p = f.path();
  const std::string a = arch + ".";
  model::ModelConfig c = shared_config(f, a, arch != "gpt2");
  c.arch = arch;
  if (arch == "gpt2") {
    c.norm_eps = float(f.get_float(a + "attention.layer_norm_epsilon"));
    return c;
  }
  c.n_kv_head =
      f.has(a + "attention.head_count_kv") ? f.get_int(a + "attention.head_count_kv") : c.n_head;
  if (c.n_head <= 0 || c.n_embd % c.n_head != 0)
    fail<IoError>("{}: {}attention.head_count = {} does not divide embedding_length {}", p, a,
                  c.n_head, c.n_embd);
  const std::string rd = a + "rope.dimension_count";
  if (f.has(rd) && f.get_int(rd) != c.n_embd / c.n_head)
    fail<IoError>("{}: {} = {}: keel rotates whole heads ({} dimensions)", p, rd, f.get_int(rd),
                  c.n_embd / c.n_head);
  for (const char* k : {"attention.key_length", "attention.value_length"}) {
    const std::string key = a + k;
    if (f.has(key) && f.get_int(key) != c.n_embd / c.n_head)
      fail<IoError>("{}: {} = {}: keel's llama has head size embedding_length / head_count = {}", p,
                    key, f.get_int(key), c.n_embd / c.n_head);
  }
  return c;
}

// llama.cpp's deepseek2 hyperparameters as keel's deepseek config. Files in
// the MLA layout (head_count_kv 1, key_length_mla / value_length_mla: what
// keel and recent converters write) and in the older per-head layout (keys and
// values per head, attn_kv_b) both read.
model::ModelConfig deepseek2_config(const io::GgufFile& f) {
  const std::string a = "deepseek2.";
  model::ModelConfig c = shared_config(f, a, true);
  c.arch = "deepseek";
  c.qk_rope_head_dim = f.get_int(a + "rope.dimension_count");
  c.q_lora_rank = f.has(a + "attention.q_lora_rank") ? f.get_int(a + "attention.q_lora_rank") : 0;
  c.kv_lora_rank = f.get_int(a + "attention.kv_lora_rank");
  const bool mla = f.has(a + "attention.key_length_mla");
  c.qk_nope_head_dim = f.get_int(a + (mla ? "attention.key_length_mla" : "attention.key_length")) -
                       c.qk_rope_head_dim;
  c.v_head_dim = f.get_int(a + (mla ? "attention.value_length_mla" : "attention.value_length"));
  c.n_dense_layers = f.get_int(a + "leading_dense_block_count");
  c.n_routed_experts = f.get_int(a + "expert_count");
  c.top_k = f.get_int(a + "expert_used_count");
  c.n_shared_experts = f.get_int(a + "expert_shared_count");
  c.moe_ffn_hidden = f.get_int(a + "expert_feed_forward_length");
  c.routed_scaling = float(f.get_float(a + "expert_weights_scale"));
  c.norm_topk_prob = f.has(a + "expert_weights_norm") && f.get_bool(a + "expert_weights_norm");
  // llama.cpp: 1 softmax (also when absent), 2 sigmoid.
  const int64_t gating = f.has(a + "expert_gating_func") ? f.get_int(a + "expert_gating_func") : 1;
  if (gating != 1 && gating != 2)
    fail<IoError>("{}: {}expert_gating_func = {}: keel gates by softmax (1) or sigmoid (2)",
                  f.path(), a, gating);
  c.gating = gating == 2 ? "sigmoid" : "softmax";
  return c;
}

bool all_zero(const Tensor& t) {
  const float* x = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i)
    if (x[i] != 0.f) return false;
  return true;
}

// Tensors of a deepseek2 file under keel's names: attn_k_b / attn_v_b merge
// back into kv_b_proj, and a shared expert that is zero in every layer (what
// keel writes for a model without one, since llama.cpp requires the tensors)
// is dropped with n_shared_experts = 0.
void deepseek2_tensors(const io::GgufFile& f, model::ModelConfig& c,
                       std::map<std::string, Tensor>& out) {
  std::map<std::string, Tensor> kb, vb;
  std::vector<std::string> shexp;
  for (const auto& t : f.tensors()) {
    const std::string& n = t.name;
    const size_t dot = n.find('.', 4);
    const std::string blk = n.rfind("blk.", 0) == 0 ? n.substr(0, dot) : "";
    if (n.ends_with(".attn_k_b.weight")) {
      kb[blk] = f.get_f32(n);
    } else if (n.ends_with(".attn_v_b.weight")) {
      vb[blk] = f.get_f32(n);
    } else if (n.ends_with(".attn_kv_b.weight")) {
      out["model.layers." + blk.substr(4) + ".self_attn.kv_b_proj.weight"] = f.get_f32(n);
    } else {
      const auto name = keel_name_from_deepseek2_gguf(n);
      if (!name) fail<IoError>("{}: tensor '{}' is not part of keel's deepseek model", f.path(), n);
      out[*name] = f.get_f32(n);
      if (n.find("_shexp.") != std::string::npos) shexp.push_back(*name);
    }
  }
  for (const auto& [blk, k] : kb) {
    const std::string kv = "model.layers." + blk.substr(4) + ".self_attn.kv_b_proj.weight";
    if (out.count(kv)) continue;  // the file also carries attn_kv_b: take it as is
    if (!vb.count(blk))
      fail<IoError>("{}: tensor '{}.attn_k_b.weight' has no attn_v_b", f.path(), blk);
    out[kv] = deepseek2_kv_b_from_gguf(k, vb.at(blk), c);
  }
  const bool zero_shared = !shexp.empty() && std::all_of(shexp.begin(), shexp.end(), [&](auto& n) {
    return all_zero(out.at(n));
  });
  if (zero_shared) {
    for (const auto& n : shexp) out.erase(n);
    c.n_shared_experts = 0;
  }
}

// Two quantizations of one matrix: every element within a step of amax/8 of the other.
bool close_within_rounding(const Tensor& a, const Tensor& b) {
  const float* x = a.data<float>();
  const float* y = b.data<float>();
  float amax = 0;
  for (int64_t i = 0; i < a.numel(); ++i) amax = std::max(amax, std::fabs(x[i]));
  for (int64_t i = 0; i < a.numel(); ++i)
    if (!(std::fabs(x[i] - y[i]) <= amax / 8)) return false;
  return true;
}

}  // namespace

bool is_gguf_file(const std::string& path) {
  if (!std::filesystem::is_regular_file(path)) return false;
  std::ifstream in(path, std::ios::binary);
  char magic[4] = {};
  in.read(magic, 4);
  return in.gcount() == 4 && std::memcmp(magic, "GGUF", 4) == 0;
}

ModelWeights read_gguf_model(const std::string& path) {
  const io::GgufFile f = io::GgufFile::open(path);
  const std::string arch = f.get_string("general.architecture");
  if (arch != "llama" && arch != "gpt2" && arch != "deepseek2")
    fail<IoError>(
        "{}: general.architecture = '{}': keel reads llama, gpt2 and deepseek2 GGUF files", path,
        arch);
  ModelWeights m;
  m.dir = path;
  m.config = arch == "deepseek2" ? deepseek2_config(f) : gguf_config(f, arch);
  m.tokenizer = gguf_tokenizer(f);
  const std::string embd = "token_embd.weight";
  if (!f.has_tensor(embd)) fail<IoError>("{}: tensor '{}' is missing", path, embd);
  m.config.vocab_size = int64_t(f.tensor_info(embd).shape()[0]);
  if (m.config.vocab_size < m.tokenizer.vocab_size())
    fail<IoError>("{}: {} has {} rows for a tokenizer of {} tokens", path, embd,
                  m.config.vocab_size, m.tokenizer.vocab_size());
  for (const auto& t : f.tensors()) {
    const DType dt = t.dtype;
    if (dt != DType::F32 && dt != DType::F16 && dt != DType::BF16 && dt != DType::Q8_0 &&
        dt != DType::Q4_0)
      fail<IoError>(
          "{}: tensor '{}' is {}: keel reads f32, f16, bf16, q8_0, q4_0, q5_0, q5_1, q4_K, q5_K "
          "and q6_K",
          path, t.name, dtype_name(dt));
  }
  if (arch == "deepseek2") {
    deepseek2_tensors(f, m.config, m.tensors);
    m.config = model::resolve_config(m.config);
    return m;
  }
  m.config = model::resolve_config(m.config);
  for (const auto& t : f.tensors()) {
    if (arch == "gpt2" && t.name == "output.weight") continue;  // the tied head, below
    const auto name = keel_name_from_gguf(arch, t.name);
    if (!name) fail<IoError>("{}: tensor '{}' is not part of keel's {} model", path, t.name, arch);
    m.tensors[*name] = f.get_f32(t.name);
  }
  if (arch == "gpt2" && f.has_tensor("output.weight")) {
    // keel's GPT-2 ties its head to the embedding: a different head has no
    // place. llama.cpp's k-quant presets store the two copies in different
    // types (the head in q6_K), so a head of another type only has to agree
    // within the coarser type's rounding (a step of amax/8 bounds q4 and up);
    // the embedding is what keel keeps.
    const Tensor head = f.get_f32("output.weight");
    const Tensor& wte = m.tensors.at("wte.weight");
    const bool same_type = f.tensor_info("output.weight").ggml == f.tensor_info(embd).ggml;
    if (head.shape() != wte.shape() ||
        (same_type ? std::memcmp(head.raw(), wte.raw(), size_t(head.numel()) * sizeof(float)) != 0
                   : !close_within_rounding(head, wte)))
      fail<IoError>(
          "{}: tensor 'output.weight' differs from 'token_embd.weight': keel's gpt2 "
          "ties its head to the embedding",
          path);
  }
  // A llama without output.weight ties its head (llama.cpp reuses token_embd).
  if (arch == "llama" && !m.tensors.count("lm_head.weight"))
    m.tensors["lm_head.weight"] = m.tensors.at("model.embed_tokens.weight");
  return m;
}

void load_gguf_weights(const ModelWeights& file, model::Model& model) {
  if (file.config.arch != model.config().arch)
    fail<IoError>("{}: the file holds a {} model but this model is a {}", file.dir,
                  file.config.arch, model.config().arch);
  std::set<std::string> used;
  for (nn::Parameter* p : model.parameters()) {
    auto it = file.tensors.find(p->name);
    if (it == file.tensors.end())
      fail<IoError>("{}: no tensor for parameter '{}' (the model needs it)", file.dir, p->name);
    if (it->second.shape() != p->value.shape())
      fail<IoError>("{}: tensor for '{}' has shape {} but the model needs {}", file.dir, p->name,
                    it->second.shape().str(), p->value.shape().str());
    backend::copy_from_host(model.backend(), it->second, p->value);
    used.insert(p->name);
  }
  // Buffers the model computes with (deepseek's routing biases).
  for (auto& [name, t] : model.inference_buffers()) {
    auto it = file.tensors.find(name);
    if (it == file.tensors.end())
      fail<IoError>("{}: no tensor for '{}' (the model's routing needs it)", file.dir, name);
    if (it->second.shape() != t->shape())
      fail<IoError>("{}: tensor for '{}' has shape {} but the model needs {}", file.dir, name,
                    it->second.shape().str(), t->shape().str());
    backend::copy_from_host(model.backend(), it->second, *t);
    used.insert(name);
  }
  for (const auto& [name, t] : file.tensors)
    if (!used.count(name))
      fail<IoError>("{}: tensor '{}' is not a parameter of this model", file.dir, name);
  model.sync_compute_weights();
}

}  // namespace keel::store
