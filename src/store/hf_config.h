// The two JSON files of a Hugging Face model folder that describe it rather
// than hold its weights: config.json (architecture and sizes) and a byte-level
// BPE tokenizer.json. Both come from outside and are validated key by key.
#pragma once
#include <string>

#include <nlohmann/json.hpp>

#include "data/tokenizer.h"
#include "model/model.h"

namespace keel::store {

// The file parsed as JSON; IoError naming the file when it is not.
nlohmann::json read_json(const std::string& path);

// config.json -> ModelConfig for model_type "gpt2" or "llama". A missing,
// mistyped or unsupported setting (another activation, rope scaling, biases on
// llama) is an IoError naming the file and the key.
model::ModelConfig model_config_from_hf(const nlohmann::json& j, const std::string& path);

// A Hugging Face tokenizer.json holding a byte-level BPE model; IoError naming
// the file and field otherwise.
data::Tokenizer tokenizer_from_hf_json(const std::string& path);

}  // namespace keel::store
