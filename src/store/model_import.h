// Bringing a model into keel from a Hugging Face style folder (config.json,
// model.safetensors or a sharded index, GPT-2 style tokenizer files): the
// folders `keel export` writes and GPT-2 / Llama checkpoints a user already
// has. Names and layouts are mapped back to keel's (see model_export.h).
#pragma once
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "backend/backend.h"
#include "data/tokenizer.h"
#include "model/model.h"

namespace keel::store {

// The folder's tokenizer: vocab.json + merges.txt (GPT-2's format), else a
// byte-level BPE tokenizer.json. IoError naming the folder when neither exists.
data::Tokenizer load_folder_tokenizer(const std::string& dir);

// Copies the folder's weights into `model` (whose config must match the
// folder's): names mapped, gpt2 Conv1D weights transposed, llama q/k rows
// permuted back, f16/bf16 widened to f32, buffers (attention masks, rotary
// tables) skipped, a tied llama head copied from the embedding. A missing or
// misshapen tensor, or one the model does not have, is an IoError naming it.
void load_hf_weights(const std::string& dir, model::Model& model);

struct LoadedModel {
  model::ModelConfig config;
  data::Tokenizer tokenizer;
  std::unique_ptr<model::Model> model;
};

// Builds the folder's model on `be` (which must outlive it) with its weights
// and tokenizer loaded.
LoadedModel load_model_folder(const std::string& dir, backend::Backend& be);

// `keel train --init FROM`: overwrites the freshly initialised parameters of
// `model` with those of FROM, which is a Hugging Face style folder, a keel run
// directory, a keel-named .safetensors file or a GGUF file (store/gguf_import.h). The architectures
// and shapes must match (IoError naming the tensor otherwise). When `tokenizer` is given and FROM
// carries a tokenizer, the two must encode identically (same id()): the same shapes with another
// vocabulary would train on shuffled embeddings.
void init_weights_from(const std::string& from, model::Model& model,
                       const data::Tokenizer* tokenizer = nullptr);

}  // namespace keel::store
