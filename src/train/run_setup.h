// From a validated io::Config to the objects a training run needs beyond the
// model (store/run_model.h) and the prepared corpus (data/run_corpus.h): the
// samplers and the trainer options. `keel train` and the tests build runs
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
#include "store/run_model.h"
#include "train/trainer.h"

namespace keel::train {

// [train] as trainer options (peak_flops from train.peak_gflops; pass the
// measured value when that is 0).
TrainerOptions run_trainer_options(const io::Config& cfg, double peak_flops);

// Train and validation samplers over the prepared shards.
data::BatchSampler make_train_sampler(const io::Config& cfg, const data::PrepareResult& prep);
std::optional<data::EvalSampler> make_val_sampler(const io::Config& cfg,
                                                  const data::PrepareResult& prep);

}  // namespace keel::train
