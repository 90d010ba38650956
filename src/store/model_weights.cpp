#include "store/model_weights.h"

#include <filesystem>

#include "core/error.h"
#include "store/model_import.h"
#include "store/run_dir.h"

namespace keel::store {

namespace fs = std::filesystem;

ModelWeights load_model_weights(const std::string& path) {
  if (!fs::is_directory(path)) fail<IoError>("{}: model directory not found", path);
  const fs::path dir(path);
  ModelWeights w;
  w.dir = path;
  if (fs::exists(dir / kRunConfigFile)) {
    // A run directory: build the training model on ref (no thread pool),
    // load it, keep the parameters' f32 storage and drop the rest.
    LoadedRun run = load_run(path, "ref");
    w.config = run.model->config();
    w.tokenizer = std::move(run.tokenizer);
    for (nn::Parameter* p : run.model->parameters()) w.tensors[p->name] = p->value;
    for (auto& [name, t] : run.model->inference_buffers()) w.tensors[name] = *t;
    return w;
  }
  if (fs::exists(dir / "config.json")) {
    // An exported (Hugging Face style) folder, mapped back to keel's names.
    auto ref = backend::make_backend("ref");
    LoadedModel m = load_model_folder(path, *ref);
    w.config = m.model->config();
    w.tokenizer = std::move(m.tokenizer);
    for (nn::Parameter* p : m.model->parameters()) w.tensors[p->name] = p->value;
    return w;
  }
  fail<IoError>("{}: neither a run directory ({}) nor an exported folder (config.json)", path,
                kRunConfigFile);
}

const Tensor& weight(const ModelWeights& w, const std::string& name, const Shape& shape) {
  auto it = w.tensors.find(name);
  if (it == w.tensors.end()) fail<IoError>("{}: tensor '{}' is missing", w.dir, name);
  if (it->second.shape() != shape || it->second.dtype() != DType::F32)
    fail<IoError>("{}: tensor '{}' is {}, expected f32{}", w.dir, name, it->second.desc(),
                  shape.str());
  return it->second;
}

}  // namespace keel::store
