// The run directory round trip: weights, config and tokenizer back into a
// model that gives the same parameters and logits; damaged folders refused.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "data/tokenizer.h"
#include "io/config.h"
#include "io/safetensors.h"
#include "store/run_dir.h"
#include "store/run_model.h"

using namespace keel;
using namespace keel::store;

namespace {

data::Tokenizer small_tokenizer() {
  std::vector<std::string_view> docs = {"the state of the union is strong",
                                        "the union of the states",
                                        "strong states make a strong union"};
  data::BpeTrainOptions o;
  o.vocab_size = 280;
  return data::Tokenizer::train(docs, o);
}

std::vector<float> flat_params(model::Model& m) {
  std::vector<float> out;
  for (auto* p : m.parameters()) {
    const auto v = p->value.to_f32_vector();
    out.insert(out.end(), v.begin(), v.end());
  }
  return out;
}

io::Config small_config(const std::string& dir) {
  io::Config c = io::default_config();
  io::apply_overrides(c, {"model.n_layer=1", "model.n_head=2", "model.n_embd=32",
                          "model.max_seq_len=16", "train.seq_len=16", "run.dir=" + dir});
  return c;
}

}  // namespace

TEST(RunDir, SaveThenLoadGivesTheSameModel) {
  const std::string dir = (std::filesystem::temp_directory_path() / "keel_test_run_dir").string();
  std::filesystem::remove_all(dir);
  const data::Tokenizer tok = small_tokenizer();
  const io::Config cfg = small_config(dir);
  auto be = make_run_backend(cfg);
  auto m = model::make_model(run_model_config(cfg, tok.vocab_size()), *be);
  m->init(3);
  m->sync_compute_weights();
  save_run(dir, cfg, *m, tok, {{"val_loss", 1.5}});
  for (const char* f : {kRunWeightsFile, kRunConfigFile, kRunTokenizerFile, kRunSummaryFile})
    EXPECT_TRUE(std::filesystem::exists(std::filesystem::path(dir) / f)) << f;

  LoadedRun r = load_run(dir);
  EXPECT_EQ(r.tokenizer.id(), tok.id());
  EXPECT_EQ(r.config.model.vocab_size, tok.vocab_size());  // resolved value written out
  const auto a = flat_params(*m), b = flat_params(*r.model);
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));
  const Tensor ids =
      Tensor::from_i32(tok.encode("the union"), {1, int64_t(tok.encode("the union").size())});
  EXPECT_EQ(m->logits(ids).to_f32_vector(), r.model->logits(ids).to_f32_vector());

  // Weights with a missing or an extra tensor are refused, naming it.
  const std::string w = (std::filesystem::path(dir) / kRunWeightsFile).string();
  auto params = m->parameters();
  std::vector<io::NamedTensor> fewer;
  for (size_t i = 1; i < params.size(); ++i) fewer.push_back({params[i]->name, params[i]->value});
  io::write_safetensors(w, fewer);
  try {
    load_run(dir);
    ADD_FAILURE() << "missing tensor accepted";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find(params[0]->name), std::string::npos) << e.what();
  }
}

TEST(RunDir, MissingRunIsAnIoError) {
  try {
    load_run("/nonexistent/run/dir");
    ADD_FAILURE();
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/run/dir: run directory not found"),
              std::string::npos);
  }
}
