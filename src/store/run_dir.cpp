#include "store/run_dir.h"

#include <filesystem>
#include <set>

#include "backend/device_tensor.h"
#include "core/error.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "store/run_model.h"

namespace keel::store {

namespace fs = std::filesystem;

void save_run(const std::string& dir, const io::Config& cfg, model::Model& model,
              const data::Tokenizer& tok, const nlohmann::json& summary) {
  io::make_dirs(dir);
  std::vector<io::NamedTensor> tensors;
  for (auto* p : model.parameters())
    tensors.push_back({p->name, backend::to_host(model.backend(), p->value)});
  for (auto& [name, t] : model.inference_buffers())
    tensors.push_back({name, backend::to_host(model.backend(), *t)});
  io::write_safetensors((fs::path(dir) / kRunWeightsFile).string(), tensors,
                        {{"format", "pt"}, {"keel.arch", model.config().arch}});
  // The saved config pins what was derived at run time, so loading needs no guesswork.
  io::Config resolved = cfg;
  resolved.model.vocab_size = model.config().vocab_size;
  resolved.model.max_seq_len = model.config().max_seq_len;
  resolved.model.n_kv_head = model.config().n_kv_head;
  resolved.model.ffn_hidden = model.config().ffn_hidden;
  io::write_file_atomic((fs::path(dir) / kRunConfigFile).string(), io::config_to_toml(resolved));
  tok.save((fs::path(dir) / kRunTokenizerFile).string());
  io::write_file_atomic((fs::path(dir) / kRunSummaryFile).string(), summary.dump(2) + "\n");
}

void load_weights(const std::string& path, model::Model& model) {
  const auto file = io::SafetensorsFile::open(path);
  std::set<std::string> used;
  for (auto* p : model.parameters()) {
    if (!file.contains(p->name))
      fail<IoError>("{}: no tensor named '{}' (the model needs it)", path, p->name);
    backend::fill_from_host(model.backend(), p->value,
                            [&](Tensor& t) { file.read_into(p->name, t); });
    used.insert(p->name);
  }
  for (auto& [name, t] : model.inference_buffers()) {
    if (!file.contains(name))
      fail<IoError>("{}: no tensor named '{}' (the model's routing needs it)", path, name);
    backend::fill_from_host(model.backend(), *t, [&](Tensor& h) { file.read_into(name, h); });
    used.insert(name);
  }
  for (const auto& e : file.entries())
    if (!used.count(e.name))
      fail<IoError>("{}: tensor '{}' is not a parameter of this model", path, e.name);
  model.sync_compute_weights();
}

LoadedRun load_run(const std::string& dir, const std::string& backend_name) {
  if (!fs::is_directory(dir)) fail<IoError>("{}: run directory not found", dir);
  for (const char* f : {kRunConfigFile, kRunWeightsFile, kRunTokenizerFile})
    if (!fs::exists(fs::path(dir) / f))
      fail<IoError>("{}: missing {} (was the run finished by `keel train`?)",
                    (fs::path(dir) / f).string(), f);
  LoadedRun r;
  r.config = io::load_config((fs::path(dir) / kRunConfigFile).string());
  if (!backend_name.empty()) r.config.train.backend = backend_name;
  r.tokenizer = data::Tokenizer::load((fs::path(dir) / kRunTokenizerFile).string());
  r.backend = make_run_backend(r.config);
  r.model = model::make_model(run_model_config(r.config, r.tokenizer.vocab_size()), *r.backend);
  load_weights((fs::path(dir) / kRunWeightsFile).string(), *r.model);
  return r;
}

}  // namespace keel::store
