// Shared pieces of the trainer tests: a synthetic, learnable token corpus
// (a noisy affine Markov chain over 64 ids) and a one-layer GPT-2.
#pragma once
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "core/rng.h"
#include "data/token_shard.h"
#include "model/model.h"
#include "train/trainer.h"

namespace keel::train::testing {

inline constexpr int64_t kVocab = 64;

// Writes (once per process) train.bin and val.bin of the synthetic corpus;
// returns their directory.
inline std::string synthetic_corpus_dir() {
  static const std::string dir = [] {
    const auto d =
        std::filesystem::temp_directory_path() / ("keel_train_synth_" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    for (const auto& [name, n, stream] :
         {std::tuple{"train.bin", 40000, 1}, std::tuple{"val.bin", 4000, 2}}) {
      const Rng rng(99, uint64_t(stream));
      std::vector<int32_t> toks(static_cast<size_t>(n));
      int32_t cur = 0;
      for (int64_t i = 0; i < n; ++i) {
        // 90%: next = (5 * cur + 3) mod V; 10%: a uniform id.
        cur = rng.uniform(2 * uint64_t(i)) < 0.9f ? int32_t((5 * cur + 3) % kVocab)
                                                  : int32_t(rng.below(2 * uint64_t(i) + 1, kVocab));
        toks[size_t(i)] = cur;
      }
      data::write_token_shard((d / name).string(), toks, kVocab);
    }
    return d.string();
  }();
  return dir;
}

inline model::ModelConfig tiny_model_config(DType compute = DType::F32) {
  model::ModelConfig c;
  c.arch = "gpt2";
  c.vocab_size = kVocab;
  c.n_layer = 1;
  c.n_head = 2;
  c.n_embd = 32;
  c.max_seq_len = 16;
  c.compute_dtype = compute;
  return c;
}

inline std::unique_ptr<model::Model> tiny_model(backend::Backend& be, uint64_t seed = 5,
                                                DType compute = DType::F32) {
  auto m = model::make_model(tiny_model_config(compute), be);
  m->init(seed);
  m->sync_compute_weights();
  return m;
}

inline TrainerOptions tiny_options(int64_t batch, int64_t accum, int64_t steps) {
  TrainerOptions o;
  o.batch_size = batch;
  o.seq_len = 16;
  o.grad_accum = accum;
  o.steps = steps;
  o.schedule = LrSchedule{3e-3, 3e-4, 2, steps};
  o.adamw = AdamWConfig{0.9, 0.95, 1e-8, 0.1};
  o.grad_clip = 1.0;
  return o;
}

inline Trainer make_trainer(model::Model& m, backend::Backend& be, const TrainerOptions& o,
                            uint64_t seed = 11) {
  const std::string dir = synthetic_corpus_dir();
  data::BatchSampler train(data::TokenShard::open(dir + "/train.bin"), o.batch_size, o.seq_len,
                           seed);
  data::EvalSampler val(data::TokenShard::open(dir + "/val.bin"), 4, o.seq_len, 4);
  return Trainer(m, be, std::move(train), std::move(val), o);
}

// Every parameter's f32 master values, concatenated.
inline std::vector<float> flat_params(model::Model& m) {
  std::vector<float> out;
  for (auto* p : m.parameters()) {
    const auto v = p->value.to_f32_vector();
    out.insert(out.end(), v.begin(), v.end());
  }
  return out;
}

// The inverse: sets every parameter from `flat` (flat_params' layout) and
// refreshes the compute weights.
inline void set_flat_params(model::Model& m, const std::vector<float>& flat) {
  size_t off = 0;
  for (auto* p : m.parameters()) {
    std::memcpy(p->value.raw(), flat.data() + off, p->value.nbytes());
    off += size_t(p->numel());
  }
  m.sync_compute_weights();
}

}  // namespace keel::train::testing
