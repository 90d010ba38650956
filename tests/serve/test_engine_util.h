// Shared pieces of the engine tests: a small BPE tokenizer, tiny gpt2 and
// llama run directories written by save_run, and the weights of a model as
// the engine sees them.
#pragma once
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "data/tokenizer.h"
#include "io/config.h"
#include "serve/model_weights.h"
#include "train/run_dir.h"
#include "train/run_setup.h"

namespace keel::serve::testing {

inline data::Tokenizer small_tokenizer() {
  std::vector<std::string_view> docs = {"the state of the union is strong",
                                        "the union of the states", "héllo wörld ünïcode 日本語",
                                        "strong states make a strong union"};
  data::BpeTrainOptions o;
  o.vocab_size = 300;
  return data::Tokenizer::train(docs, o);
}

inline io::Config small_config(const std::string& arch, const std::string& dir) {
  io::Config c = io::default_config();
  std::vector<std::string> o = {"model.arch=" + arch, "model.n_layer=2",      "model.n_head=4",
                                "model.n_embd=64",    "model.max_seq_len=48", "train.seq_len=48",
                                "run.dir=" + dir};
  if (arch == "llama") o.push_back("model.n_kv_head=2");
  io::apply_overrides(c, o);
  return c;
}

// Writes (once per process and arch) a run directory with random weights.
inline std::string tiny_run(const std::string& arch) {
  const auto dir = std::filesystem::temp_directory_path() /
                   ("keel_engine_" + arch + "_" + std::to_string(::getpid())) / "tiny";
  if (std::filesystem::exists(dir / train::kRunWeightsFile)) return dir.string();
  const data::Tokenizer tok = small_tokenizer();
  const io::Config cfg = small_config(arch, dir.string());
  auto be = train::make_run_backend(cfg);
  auto m = model::make_model(train::run_model_config(cfg, tok.vocab_size()), *be);
  m->init(7);
  m->sync_compute_weights();
  train::save_run(dir.string(), cfg, *m, tok, {{"val_loss", 0.0}});
  return dir.string();
}

// The engine's view of an in-memory model's weights.
inline ModelWeights weights_of(model::Model& m) {
  ModelWeights w;
  w.config = m.config();
  for (nn::Parameter* p : m.parameters()) w.tensors[p->name] = p->value;
  w.dir = "<memory>";
  return w;
}

}  // namespace keel::serve::testing
