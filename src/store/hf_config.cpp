#include "store/hf_config.h"

#include <cmath>
#include <optional>
#include <set>
#include <vector>

#include "core/error.h"
#include "io/atomic_file.h"

namespace keel::store {

using nlohmann::json;

json read_json(const std::string& path) {
  const std::string text = io::read_file_bytes(path);
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    fail<IoError>("{}: not valid JSON: {}", path, e.what());
  }
}

namespace {

int64_t int_key(const json& j, const std::string& key, const std::string& path,
                std::optional<int64_t> def = std::nullopt) {
  if (!j.contains(key) || j[key].is_null()) {
    if (def) return *def;
    fail<IoError>("{}: key '{}' is missing", path, key);
  }
  if (!j[key].is_number_integer() || j[key].get<int64_t>() <= 0)
    fail<IoError>("{}: key '{}' must be a positive integer, got {}", path, key, j[key].dump());
  return j[key].get<int64_t>();
}

// Every float setting keel imports (norm epsilons, rope theta) is positive.
float float_key(const json& j, const std::string& key, const std::string& path, float def) {
  if (!j.contains(key) || j[key].is_null()) return def;
  const float v = j[key].is_number() ? j[key].get<float>() : -1.f;
  if (!(v > 0.f) || !std::isfinite(v))
    fail<IoError>("{}: key '{}' must be a positive number, got {}", path, key, j[key].dump());
  return v;
}

bool bool_key(const json& j, const std::string& key, const std::string& path, bool def) {
  if (!j.contains(key) || j[key].is_null()) return def;
  if (!j[key].is_boolean())
    fail<IoError>("{}: key '{}' must be true or false, got {}", path, key, j[key].dump());
  return j[key].get<bool>();
}

// json::value() throws nlohmann's type_error on a key of another type: a
// crafted file must get an IoError naming the key instead.
std::string string_key(const json& j, const std::string& key, const std::string& path,
                       const std::string& def) {
  if (!j.contains(key) || j[key].is_null()) return def;
  if (!j[key].is_string())
    fail<IoError>("{}: key '{}' must be a string, got {}", path, key, j[key].dump());
  return j[key].get<std::string>();
}

}  // namespace

model::ModelConfig model_config_from_hf(const json& j, const std::string& path) {
  if (!j.is_object()) fail<IoError>("{}: must be a JSON object", path);
  const std::string type = string_key(j, "model_type", path, "");
  model::ModelConfig c;
  if (type == "gpt2") {
    c.arch = "gpt2";
    c.vocab_size = int_key(j, "vocab_size", path);
    c.n_embd = int_key(j, "n_embd", path);
    c.n_layer = int_key(j, "n_layer", path);
    c.n_head = int_key(j, "n_head", path);
    c.n_kv_head = c.n_head;
    c.ffn_hidden = int_key(j, "n_inner", path, 4 * c.n_embd);
    c.max_seq_len = int_key(j, "n_positions", path, int_key(j, "n_ctx", path, 1024));
    c.norm_eps = float_key(j, "layer_norm_epsilon", path, 1e-5f);
    const std::string act = string_key(j, "activation_function", path, "gelu_new");
    if (act != "gelu_new" && act != "gelu_pytorch_tanh")
      fail<IoError>("{}: key 'activation_function' is '{}'; keel's gpt2 uses tanh GELU (gelu_new)",
                    path, act);
    if (!bool_key(j, "tie_word_embeddings", path, true))
      fail<IoError>("{}: key 'tie_word_embeddings' is false; keel's gpt2 ties the LM head", path);
  } else if (type == "llama") {
    c.arch = "llama";
    c.vocab_size = int_key(j, "vocab_size", path);
    c.n_embd = int_key(j, "hidden_size", path);
    c.n_layer = int_key(j, "num_hidden_layers", path);
    c.n_head = int_key(j, "num_attention_heads", path);
    c.n_kv_head = int_key(j, "num_key_value_heads", path, c.n_head);
    c.ffn_hidden = int_key(j, "intermediate_size", path);
    c.max_seq_len = int_key(j, "max_position_embeddings", path, 2048);
    c.norm_eps = float_key(j, "rms_norm_eps", path, 1e-6f);
    c.rope_theta = float_key(j, "rope_theta", path, 10000.f);
    if (c.n_embd % c.n_head != 0)
      fail<IoError>("{}: hidden_size {} is not a multiple of num_attention_heads {}", path,
                    c.n_embd, c.n_head);
    if (int_key(j, "head_dim", path, c.n_embd / c.n_head) != c.n_embd / c.n_head)
      fail<IoError>("{}: key 'head_dim' differs from hidden_size / num_attention_heads", path);
    if (string_key(j, "hidden_act", path, "silu") != "silu")
      fail<IoError>("{}: key 'hidden_act' must be 'silu' for keel's llama", path);
    if (j.contains("rope_scaling") && !j["rope_scaling"].is_null())
      fail<IoError>("{}: key 'rope_scaling' is set; keel's llama has plain RoPE only", path);
    if (bool_key(j, "attention_bias", path, false) || bool_key(j, "mlp_bias", path, false))
      fail<IoError>("{}: attention_bias/mlp_bias are set; keel's llama has no biases", path);
  } else {
    fail<IoError>("{}: key 'model_type' is '{}'; keel imports 'gpt2' and 'llama'", path, type);
  }
  return c;
}

data::Tokenizer tokenizer_from_hf_json(const std::string& path) {
  const json j = read_json(path);
  if (!j.contains("model") || !j["model"].is_object() ||
      string_key(j["model"], "type", path, "") != "BPE" || !j["model"].contains("vocab") ||
      !j["model"]["vocab"].is_object() || !j["model"].contains("merges") ||
      !j["model"]["merges"].is_array())
    fail<IoError>("{}: field 'model' is not a byte-level BPE model with 'vocab' and 'merges'",
                  path);
  const json& vocab = j["model"]["vocab"];
  std::set<std::string> special_text;
  if (j.contains("added_tokens") && j["added_tokens"].is_array())
    for (const auto& t : j["added_tokens"])
      if (t.is_object() && t.contains("special") && t["special"].is_boolean() &&
          t["special"].get<bool>() && t.contains("content") && t["content"].is_string())
        special_text.insert(t["content"].get<std::string>());
  std::vector<std::string> tokens(vocab.size());
  std::vector<bool> seen(vocab.size(), false), special(vocab.size(), false);
  for (const auto& [text, idv] : vocab.items()) {
    if (!idv.is_number_integer() || idv.get<int64_t>() < 0 ||
        idv.get<int64_t>() >= int64_t(vocab.size()) || seen[size_t(idv.get<int64_t>())])
      fail<IoError>("{}: model.vocab['{}'] must be a unique id below {}", path, text, vocab.size());
    const auto id = size_t(idv.get<int64_t>());
    seen[id] = true;
    tokens[id] = text;
    special[id] = special_text.count(text) != 0;
  }
  // Byte-level tokens never hold a plain space, so "a b" is unambiguous.
  std::vector<std::string> merges;
  for (const auto& m : j["model"]["merges"]) {
    if (m.is_string())
      merges.push_back(m.get<std::string>());
    else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string())
      merges.push_back(m[0].get<std::string>() + " " + m[1].get<std::string>());
    else
      fail<IoError>("{}: merge {} is neither \"a b\" nor [a, b]", path, m.dump());
  }
  return data::Tokenizer::from_gpt2_strings(tokens, special, merges, path);
}

}  // namespace keel::store
