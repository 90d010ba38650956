// From a validated io::Config to the objects a run needs: the prepared corpus
// (cached shards, tokenizer, unigram entropy), the backend, the model config,
// the samplers and the trainer options. `keel train` and the tests build runs
// through these, so both see the same wiring.
#pragma once
#include <memory>
#include <optional>

#include "backend/backend.h"
#include "data/batch_sampler.h"
#include "data/corpus.h"
#include "data/tokenizer.h"
#include "io/config.h"
#include "model/model.h"
#include "train/trainer.h"

namespace keel::train {

// Tokenizes data.corpus into data.cache_dir (reused when unchanged). A missing
// corpus is an IoError naming it.
data::PrepareResult prepare_run_data(const io::Config& cfg);

// The backend named by train.backend with train.threads applied.
std::unique_ptr<backend::Backend> make_run_backend(const io::Config& cfg);

// [model] as a model::ModelConfig; vocab_size 0 becomes the tokenizer's size
// and max_seq_len 0 becomes train.seq_len. A model vocabulary smaller than the
// tokenizer's is a ConfigError.
model::ModelConfig run_model_config(const io::Config& cfg, int64_t tokenizer_vocab);

// [train] as trainer options (peak_flops from train.peak_gflops; pass the
// measured value when that is 0).
TrainerOptions run_trainer_options(const io::Config& cfg, double peak_flops);

// Train and validation samplers over the prepared shards.
data::BatchSampler make_train_sampler(const io::Config& cfg, const data::PrepareResult& prep);
std::optional<data::EvalSampler> make_val_sampler(const io::Config& cfg,
                                                  const data::PrepareResult& prep);

}  // namespace keel::train
