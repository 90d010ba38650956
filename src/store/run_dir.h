// The run directory's final products: model.safetensors (f32 master weights
// named by Parameter::name, plus Model::inference_buffers such as routing
// biases), config.toml (the resolved config), tokenizer.json and
// summary.json; and loading them back into a ready model for `keel
// generate`. Every file is written atomically.
#pragma once
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "backend/backend.h"
#include "data/tokenizer.h"
#include "io/config.h"
#include "model/model.h"

namespace keel::store {

inline constexpr const char* kRunWeightsFile = "model.safetensors";
inline constexpr const char* kRunConfigFile = "config.toml";
inline constexpr const char* kRunTokenizerFile = "tokenizer.json";
inline constexpr const char* kRunSummaryFile = "summary.json";

// Writes weights, config, tokenizer and the summary into dir (created if needed).
void save_run(const std::string& dir, const io::Config& cfg, model::Model& model,
              const data::Tokenizer& tok, const nlohmann::json& summary);

// Copies f32 master weights from a safetensors file into the model's
// parameters and inference buffers (names and shapes must match exactly; IoError naming the
// tensor otherwise), then refreshes the compute copies.
void load_weights(const std::string& path, model::Model& model);

struct LoadedRun {
  io::Config config;
  data::Tokenizer tokenizer;
  std::unique_ptr<backend::Backend> backend;
  std::unique_ptr<model::Model> model;
};

// Loads a run directory written by save_run; a missing directory or file is
// an IoError naming it. backend_name overrides train.backend when not empty.
LoadedRun load_run(const std::string& dir, const std::string& backend_name = "");

}  // namespace keel::store
