#include "store/model_import.h"

#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>

#include "backend/device_tensor.h"
#include "core/error.h"
#include "data/byte_unicode.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "store/gguf_import.h"
#include "store/hf_config.h"
#include "store/model_export.h"
#include "store/run_dir.h"

namespace keel::store {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// Hugging Face tensor name -> keel parameter name; nullopt for buffers keel
// recomputes (GPT-2's attention masks, rotary tables) and GPT-2's tied head.
std::optional<std::string> keel_name(const std::string& arch, std::string n) {
  if (arch == "gpt2") {
    if (n.rfind("transformer.", 0) == 0) n = n.substr(12);
    if (n == "lm_head.weight" || n.ends_with(".attn.bias") || n.ends_with(".attn.masked_bias"))
      return std::nullopt;
  } else if (n.ends_with(".rotary_emb.inv_freq")) {
    return std::nullopt;
  }
  return n;
}

// The safetensors files of a folder: model.safetensors, or the shards listed
// by model.safetensors.index.json.
std::vector<std::string> weight_files(const std::string& dir) {
  const fs::path single = fs::path(dir) / kHfWeightsFile;
  if (fs::exists(single)) return {single.string()};
  const fs::path index = fs::path(dir) / "model.safetensors.index.json";
  if (!fs::exists(index))
    fail<IoError>(
        "{}: no model.safetensors or model.safetensors.index.json (other weight "
        "formats such as pytorch_model.bin are not read)",
        dir);
  const json j = read_json(index.string());
  if (!j.contains("weight_map") || !j["weight_map"].is_object())
    fail<IoError>("{}: key 'weight_map' is missing or not an object", index.string());
  std::set<std::string> files;
  for (const auto& [name, file] : j["weight_map"].items()) {
    if (!file.is_string() || file.get<std::string>().find('/') != std::string::npos)
      fail<IoError>("{}: weight_map['{}'] must be a file name in the folder", index.string(), name);
    files.insert((fs::path(dir) / file.get<std::string>()).string());
  }
  return {files.begin(), files.end()};
}

}  // namespace

data::Tokenizer load_folder_tokenizer(const std::string& dir) {
  const fs::path vocab = fs::path(dir) / kHfVocabFile, merges = fs::path(dir) / kHfMergesFile;
  if (fs::exists(vocab) && fs::exists(merges))
    return data::Tokenizer::load_gpt2(vocab.string(), merges.string());
  const fs::path tj = fs::path(dir) / kHfTokenizerFile;
  if (fs::exists(tj)) return tokenizer_from_hf_json(tj.string());
  fail<IoError>(
      "{}: no GPT-2 style tokenizer (vocab.json + merges.txt, or a byte-level BPE "
      "tokenizer.json)",
      dir);
}

void load_hf_weights(const std::string& dir, model::Model& model) {
  const auto& c = model.config();
  std::map<std::string, nn::Parameter*> params;
  for (auto* p : model.parameters()) params[p->name] = p;
  std::set<std::string> loaded;
  for (const auto& file : weight_files(dir)) {
    const auto st = io::SafetensorsFile::open(file);
    for (const auto& e : st.entries()) {
      const auto name = keel_name(c.arch, e.name);
      if (!name) continue;
      auto it = params.find(*name);
      if (it == params.end())
        fail<IoError>("{}: tensor '{}' is not a parameter of keel's {} model", file, e.name,
                      c.arch);
      if (e.dtype != DType::F32 && e.dtype != DType::F16 && e.dtype != DType::BF16)
        fail<IoError>("{}: tensor '{}' has dtype {}; f32, f16 or bf16 expected", file, e.name,
                      dtype_name(e.dtype));
      if (!loaded.insert(*name).second)
        fail<IoError>("{}: tensor '{}' appears more than once in the folder", file, e.name);
      Tensor t = st.get(e.name);
      if (t.dtype() != DType::F32) t = t.to(DType::F32);
      if (c.arch == "gpt2" && t.rank() == 2 && is_gpt2_conv1d_weight(*name)) {
        t = transpose_2d(t);
      } else if (c.arch == "llama" && t.rank() == 2 &&
                 name->ends_with(".self_attn.q_proj.weight")) {
        t = rope_rows_hf_to_keel(t, c.n_head);
      } else if (c.arch == "llama" && t.rank() == 2 &&
                 name->ends_with(".self_attn.k_proj.weight")) {
        t = rope_rows_hf_to_keel(t, c.n_kv_head);
      }
      nn::Parameter* p = it->second;
      if (t.shape() != p->value.shape())
        fail<IoError>("{}: tensor '{}' has shape {} but the model needs {}", file, e.name,
                      t.shape().str(), p->value.shape().str());
      backend::copy_from_host(model.backend(), t.is_contiguous() ? t : t.clone(), p->value);
    }
  }
  // Tied llama heads (tie_word_embeddings) store no lm_head.
  if (c.arch == "llama" && !loaded.count("lm_head.weight") &&
      loaded.count("model.embed_tokens.weight")) {
    auto* head = params.at("lm_head.weight");
    model.backend().copy(head->value.raw(), params.at("model.embed_tokens.weight")->value.raw(),
                         head->value.nbytes());
    loaded.insert("lm_head.weight");
  }
  for (const auto& [name, p] : params)
    if (!loaded.count(name))
      fail<IoError>("{}: no tensor for parameter '{}' (the model needs it)", dir, name);
  model.sync_compute_weights();
}

LoadedModel load_model_folder(const std::string& dir, backend::Backend& be) {
  if (!fs::is_directory(dir)) fail<IoError>("{}: model folder not found", dir);
  const fs::path cfg_path = fs::path(dir) / kHfConfigFile;
  if (!fs::exists(cfg_path))
    fail<IoError>(
        "{}: missing config.json (a Hugging Face style model folder is expected; use "
        "--run for a keel run directory)",
        cfg_path.string());
  LoadedModel r;
  r.config = model_config_from_hf(read_json(cfg_path.string()), cfg_path.string());
  r.tokenizer = load_folder_tokenizer(dir);
  if (r.config.vocab_size < r.tokenizer.vocab_size())
    fail<IoError>("{}: vocab_size {} is smaller than the tokenizer's vocabulary ({})",
                  cfg_path.string(), r.config.vocab_size, r.tokenizer.vocab_size());
  r.model = model::make_model(r.config, be);
  r.config = r.model->config();
  load_hf_weights(dir, *r.model);
  return r;
}

void init_weights_from(const std::string& from, model::Model& model,
                       const data::Tokenizer* tokenizer) {
  const fs::path p(from);
  auto check_tokenizer = [&](const data::Tokenizer& theirs) {
    if (tokenizer && theirs.id() != tokenizer->id())
      fail<IoError>("{}: its tokenizer ({}, {} tokens) differs from this run's ({}, {} tokens)",
                    from, theirs.id(), theirs.vocab_size(), tokenizer->id(),
                    tokenizer->vocab_size());
  };
  if (fs::is_regular_file(p) && p.extension() == ".safetensors") {
    load_weights(from, model);
    return;
  }
  if (is_gguf_file(from)) {
    const ModelWeights w = read_gguf_model(from);
    check_tokenizer(w.tokenizer);
    load_gguf_weights(w, model);
    return;
  }
  if (!fs::is_directory(p))
    fail<IoError>(
        "{}: --init must name a model folder, a run directory, a .safetensors or a "
        "GGUF file",
        from);
  if (fs::exists(p / kHfConfigFile)) {
    const std::string cfg_path = (p / kHfConfigFile).string();
    const model::ModelConfig c = model_config_from_hf(read_json(cfg_path), cfg_path);
    if (c.arch != model.config().arch)
      fail<IoError>("{}: the folder holds a {} model but this run trains a {} model", cfg_path,
                    c.arch, model.config().arch);
    check_tokenizer(load_folder_tokenizer(from));
    load_hf_weights(from, model);
    return;
  }
  if (fs::exists(p / kRunWeightsFile)) {
    if (fs::exists(p / kRunTokenizerFile))
      check_tokenizer(data::Tokenizer::load((p / kRunTokenizerFile).string()));
    load_weights((p / kRunWeightsFile).string(), model);
    return;
  }
  fail<IoError>("{}: neither config.json (model folder) nor model.safetensors (run directory)",
                from);
}

}  // namespace keel::store
