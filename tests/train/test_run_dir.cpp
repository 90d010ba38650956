// The run directory round trip (weights, config, tokenizer back into a model
// that gives the same logits) and the sampling rules of generation.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "data/tokenizer.h"
#include "io/config.h"
#include "io/safetensors.h"
#include "train/generation.h"
#include "train/run_dir.h"
#include "train/run_setup.h"
#include "train_test_util.h"

using namespace keel;
using namespace keel::train;

namespace {

data::Tokenizer small_tokenizer() {
  std::vector<std::string_view> docs = {"the state of the union is strong",
                                        "the union of the states",
                                        "strong states make a strong union"};
  data::BpeTrainOptions o;
  o.vocab_size = 280;
  return data::Tokenizer::train(docs, o);
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
  const auto a = keel::train::testing::flat_params(*m),
             b = keel::train::testing::flat_params(*r.model);
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

TEST(Generation, GreedyAndCuts) {
  const std::vector<float> logits = {1.f, 3.f, 2.f, 3.f, -1.f};
  SampleOptions g;
  g.temperature = 0;
  EXPECT_EQ(sample_token(logits, g, 0.99), 1);  // ties go to the smaller id
  SampleOptions k1;
  k1.top_k = 1;
  for (double u : {0.0, 0.5, 0.999}) EXPECT_EQ(sample_token(logits, k1, u), 1);
  SampleOptions p;
  p.temperature = 1;
  p.top_p = 1e-6;  // the nucleus holds only the most likely token
  EXPECT_EQ(sample_token(logits, p, 0.9), 1);
  SampleOptions k2;
  k2.temperature = 1;
  k2.top_k = 2;  // only ids 1 and 3 (equal logits): half of u each
  EXPECT_EQ(sample_token(logits, k2, 0.25), 1);
  EXPECT_EQ(sample_token(logits, k2, 0.75), 3);
}

TEST(Generation, FrequenciesFollowTheSoftmax) {
  const std::vector<float> logits = {0.f, 1.f, 2.f};
  SampleOptions o;
  o.temperature = 2.0;
  std::vector<int> counts(3, 0);
  const int n = 10000;
  for (int i = 0; i < n; ++i) ++counts[sample_token(logits, o, (i + 0.5) / n)];
  double z = 0;
  for (float l : logits) z += std::exp(l / 2.0);
  for (int j = 0; j < 3; ++j)
    EXPECT_NEAR(counts[j] / double(n), std::exp(logits[j] / 2.0) / z, 2.0 / n) << j;
}

TEST(Generation, SeededAndBoundedByContext) {
  auto be = backend::make_backend("cpu");
  auto m = keel::train::testing::tiny_model(*be);
  SampleOptions o;
  o.max_tokens = 40;  // longer than max_seq_len 16: the window slides
  o.seed = 9;
  const std::vector<int32_t> prompt = {1, 2, 3};
  const auto a = generate(*m, prompt, o), b = generate(*m, prompt, o);
  EXPECT_EQ(a, b);
  EXPECT_EQ(a.size(), 40u);
  for (int32_t id : a) EXPECT_TRUE(id >= 0 && id < keel::train::testing::kVocab);
  o.seed = 10;
  EXPECT_NE(generate(*m, prompt, o), a);
  o.stop_id = a[4];
  const auto stopped = generate(*m, prompt, SampleOptions{40, 0.8, 0, 1.0, 9, a[4]});
  EXPECT_LE(stopped.size(), 5u);
  EXPECT_EQ(stopped.back(), a[4]);
  EXPECT_THROW(generate(*m, {}, o), Error);
}
