#include "store/model_weights.h"

#include <filesystem>

#include "core/error.h"
#include "io/config.h"
#include "io/safetensors.h"
#include "store/gguf_import.h"
#include "store/model_import.h"
#include "store/run_dir.h"
#include "store/run_model.h"

namespace keel::store {

namespace fs = std::filesystem;

ModelWeights load_model_weights(const std::string& path) {
  if (is_gguf_file(path)) return read_gguf_model(path);
  if (fs::is_regular_file(path))
    fail<IoError>("{}: not a GGUF file (a model is a run directory, a model folder or a .gguf)",
                  path);
  if (!fs::is_directory(path)) fail<IoError>("{}: model directory not found", path);
  const fs::path dir(path);
  ModelWeights w;
  w.dir = path;
  if (fs::exists(dir / kRunConfigFile)) {
    // A run directory: the tensors come straight from model.safetensors (one
    // copy; building the training model first cost three more passes over
    // every weight). Shapes are checked by weight() as the engine takes them.
    for (const char* f : {kRunWeightsFile, kRunTokenizerFile})
      if (!fs::exists(dir / f))
        fail<IoError>("{}: missing {} (was the run finished by `keel train`?)", (dir / f).string(),
                      f);
    const io::Config cfg = io::load_config((dir / kRunConfigFile).string());
    w.tokenizer = data::Tokenizer::load((dir / kRunTokenizerFile).string());
    w.config = model::resolve_config(run_model_config(cfg, w.tokenizer.vocab_size()));
    const std::string file_path = (dir / kRunWeightsFile).string();
    const auto file = io::SafetensorsFile::open(file_path);
    for (const auto& e : file.entries()) {
      if (e.dtype != DType::F32)
        fail<IoError>("{}: tensor '{}' is {}, expected f32 (keel writes f32 master weights)",
                      file_path, e.name, dtype_name(e.dtype));
      w.tensors[e.name] = file.get(e.name);
    }
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
