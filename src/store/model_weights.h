// What the engine loads before it can run: the resolved model config, the
// tokenizer and every parameter as an f32 tensor by its keel name, from a run
// directory (`keel train`), an exported or Hugging Face safetensors folder
// (config.json, model.safetensors, tokenizer files) or a GGUF file.
#pragma once
#include <map>
#include <string>

#include "core/tensor.h"
#include "data/tokenizer.h"
#include "model/model.h"

namespace keel::store {

struct ModelWeights {
  model::ModelConfig config;  // resolved (defaults filled in)
  data::Tokenizer tokenizer;
  std::map<std::string, Tensor> tensors;  // f32, by parameter name
  std::string dir;                        // where it came from (a folder or a file)
};

// IoError/ConfigError naming the file on bad input.
ModelWeights load_model_weights(const std::string& path);

// The tensor called `name` with the given shape; IoError naming it otherwise.
const Tensor& weight(const ModelWeights& w, const std::string& name, const Shape& shape);

}  // namespace keel::store
