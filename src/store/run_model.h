// From a validated io::Config to the model it describes: the backend named by
// train.backend and the model::ModelConfig of [model]. Training, loading a
// run directory and the serving engine all build models through these.
#pragma once
#include <cstdint>
#include <memory>

#include "backend/backend.h"
#include "io/config.h"
#include "model/model.h"

namespace keel::store {

// The backend named by train.backend with train.threads applied.
std::unique_ptr<backend::Backend> make_run_backend(const io::Config& cfg);

// [model] as a model::ModelConfig; vocab_size 0 becomes the tokenizer's size
// and max_seq_len 0 becomes train.seq_len. A model vocabulary smaller than the
// tokenizer's is a ConfigError.
model::ModelConfig run_model_config(const io::Config& cfg, int64_t tokenizer_vocab);

}  // namespace keel::store
