// Checkpoints round trip the whole training state: a run continued from a
// checkpoint in a fresh trainer ends bit-identical to an uninterrupted one
// (f32 and bf16 compute), `latest` and retention behave, the asynchronous
// writer overlaps training, stale temporaries of a crashed write are
// ignored and cleaned, and metrics.jsonl is trimmed on resume.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "checkpoint_test_util.h"
#include "io/atomic_file.h"
#include "resilience/async_checkpointer.h"
#include "resilience/checkpoint_checksum.h"
#include "resilience/checkpoint_manifest.h"
#include "resilience/checkpoint_retention.h"
#include "train/metrics.h"

using namespace keel;
using namespace keel::resilience;
using namespace keel::resilience::testing;
using keel::train::testing::flat_params;
using keel::train::testing::make_trainer;
using keel::train::testing::tiny_model;
using keel::train::testing::tiny_options;

namespace {

std::vector<float> flat_moments(train::Trainer& t) {
  std::vector<float> out;
  for (auto* list : {&t.optimizer().m(), &t.optimizer().v()})
    for (const auto& x : *list) {
      const auto v = x.to_f32_vector();
      out.insert(out.end(), v.begin(), v.end());
    }
  return out;
}

bool bit_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

void resume_is_bit_exact(DType compute) {
  auto be = backend::make_backend("cpu");
  const io::Config cfg = test_config();
  TempDir dir;
  const int64_t total = 8, cut = 3;
  // Uninterrupted.
  auto ma = tiny_model(*be, 5, compute);
  auto ta = make_trainer(*ma, *be, tiny_options(4, 2, total));
  while (!ta.done()) ta.step();
  // Interrupted after `cut` steps: saved, then continued in a fresh model and trainer.
  std::string path;
  {
    auto mb = tiny_model(*be, 5, compute);
    auto tb = make_trainer(*mb, *be, tiny_options(4, 2, total));
    for (int i = 0; i < cut; ++i) tb.step();
    path = save(tb, dir.path(), cfg);
  }
  auto mc = tiny_model(*be, 77, compute);  // different init: everything must come from the file
  auto tc = make_trainer(*mc, *be, tiny_options(4, 2, total));
  const LoadedCheckpoint ck = verify_checkpoint(path, expectations(tc, cfg));
  EXPECT_EQ(ck.manifest.step, cut);
  restore_training_state(ck, tc);
  EXPECT_EQ(tc.step_count(), cut);
  EXPECT_EQ(tc.optimizer().t(), cut);
  while (!tc.done()) tc.step();
  EXPECT_TRUE(bit_equal(flat_params(*ma), flat_params(*mc)));
  EXPECT_TRUE(bit_equal(flat_moments(ta), flat_moments(tc)));
  EXPECT_EQ(ta.optimizer().t(), tc.optimizer().t());
  // The compute copies were refreshed too: the same loss on the same batch.
  EXPECT_EQ(ta.evaluate(), tc.evaluate());
}

}  // namespace

TEST(Checkpoint, ResumeIsBitExactF32) {
  resume_is_bit_exact(DType::F32);
}

TEST(Checkpoint, ResumeIsBitExactBf16) {
  resume_is_bit_exact(DType::BF16);
}

TEST(Checkpoint, DirectoryLayoutLatestAndManifest) {
  auto be = backend::make_backend("cpu");
  const io::Config cfg = test_config();
  TempDir dir;
  auto m = tiny_model(*be);
  auto t = make_trainer(*m, *be, tiny_options(2, 1, 4));
  t.step();
  save(t, dir.path(), cfg);
  t.step();
  const std::string p2 = save(t, dir.path(), cfg);
  EXPECT_EQ(p2, dir / "step-00000002");
  EXPECT_EQ(io::read_file_bytes(dir / "latest"), "step-00000002\n");
  EXPECT_EQ(list_checkpoint_steps(dir.path()), (std::vector<int64_t>{1, 2}));
  const auto man = parse_manifest(io::read_file_bytes(p2 + "/manifest.json"), "m");
  EXPECT_EQ(man.step, 2);
  EXPECT_EQ(man.format_version, kCheckpointFormatVersion);
  ASSERT_EQ(man.files.size(), 3u);
  for (const auto& f : man.files) {
    // Independent re-hash: the whole file read here and hashed with
    // XXH3-64 directly, not through the writer's checksum_file.
    const std::string bytes = io::read_file_bytes(p2 + "/" + f.name);
    EXPECT_EQ(uint64_t(bytes.size()), f.bytes) << f.name;
    EXPECT_EQ(fmt::format("{:016x}", XXH3_64bits(bytes.data(), bytes.size())), f.xxh3) << f.name;
  }
  // The params file is plain safetensors with every parameter.
  const auto st = io::SafetensorsFile::open(p2 + "/params.safetensors");
  EXPECT_EQ(st.entries().size(), m->parameters().size());
}

TEST(Checkpoint, NewestVerifiedIsChosenEvenPastLatest) {
  auto be = backend::make_backend("cpu");
  const io::Config cfg = test_config();
  TempDir dir;
  auto m = tiny_model(*be);
  auto t = make_trainer(*m, *be, tiny_options(2, 1, 4));
  t.step();
  save(t, dir.path(), cfg);
  t.step();
  save(t, dir.path(), cfg);
  // A crash between the rename and the update of `latest` leaves it one behind.
  io::write_file_atomic(dir / "latest", "step-00000001\n");
  auto t2 = make_trainer(*m, *be, tiny_options(2, 1, 4));
  auto ck = load_newest_verified(dir.path(), expectations(t2, cfg));
  ASSERT_TRUE(ck.has_value());
  EXPECT_EQ(ck->manifest.step, 2);
}

TEST(Checkpoint, EmptyOrMissingRootHasNoCheckpoint) {
  auto be = backend::make_backend("cpu");
  TempDir dir;
  auto m = tiny_model(*be);
  auto t = make_trainer(*m, *be, tiny_options(2, 1, 4));
  EXPECT_FALSE(load_newest_verified(dir / "absent", expectations(t, test_config())).has_value());
  EXPECT_FALSE(load_newest_verified(dir.path(), expectations(t, test_config())).has_value());
}

TEST(Checkpoint, StaleTemporaryOfACrashedWriteIsIgnoredAndCleaned) {
  auto be = backend::make_backend("cpu");
  const io::Config cfg = test_config();
  TempDir dir;
  auto m = tiny_model(*be);
  auto t = make_trainer(*m, *be, tiny_options(2, 1, 4));
  t.step();
  save(t, dir.path(), cfg);
  // What a SIGKILL in the middle of writing step 2 leaves behind.
  std::filesystem::create_directories(dir / ".tmp-step-00000002-999999");
  io::write_file_atomic(dir / ".tmp-step-00000002-999999/params.safetensors", "partial");
  EXPECT_EQ(list_checkpoint_steps(dir.path()), (std::vector<int64_t>{1}));
  auto ck = load_newest_verified(dir.path(), expectations(t, cfg));
  ASSERT_TRUE(ck.has_value());
  EXPECT_EQ(ck->manifest.step, 1);
  t.step();
  save(t, dir.path(), cfg);
  EXPECT_FALSE(std::filesystem::exists(dir / ".tmp-step-00000002-999999"));
  EXPECT_EQ(io::read_file_bytes(dir / "latest"), "step-00000002\n");
}

TEST(Checkpoint, RewritingAnExistingStepReplacesIt) {
  auto be = backend::make_backend("cpu");
  const io::Config cfg = test_config();
  TempDir dir;
  auto m = tiny_model(*be);
  auto t = make_trainer(*m, *be, tiny_options(2, 1, 4));
  t.step();
  save(t, dir.path(), cfg);
  save(t, dir.path(), cfg);
  EXPECT_EQ(list_checkpoint_steps(dir.path()), (std::vector<int64_t>{1}));
  EXPECT_NO_THROW(verify_checkpoint(dir / "step-00000001", expectations(t, cfg)));
}

TEST(Checkpoint, ModelStateBuffersAndExtraRoundTrip) {
  auto be = backend::make_backend("cpu");
  const io::Config cfg = test_config();
  TempDir dir;
  auto m = tiny_model(*be);
  auto t = make_trainer(*m, *be, tiny_options(2, 1, 4));
  CheckpointState st;
  capture_training_state(t, st);
  st.manifest.config = config_manifest_map(cfg);
  st.manifest.tokenizer_id = "tok-test";
  st.manifest.health = {{"loss_ema", 2.5}};
  st.manifest.extra = {{"dist", {{"residual_norm", 0.25}}}};
  st.extra.push_back({"dist.residual", Tensor::from_f32({1.f, -2.f, 3.f}, Shape({3}))});
  const std::string p = write_checkpoint(dir.path(), st, {}).path;
  auto ck = verify_checkpoint(p, expectations(t, cfg));
  EXPECT_EQ(ck.manifest.health["loss_ema"].get<double>(), 2.5);
  EXPECT_EQ(ck.manifest.extra["dist"]["residual_norm"].get<double>(), 0.25);
  ASSERT_TRUE(ck.extra.has_value());
  EXPECT_EQ(ck.extra->get("dist.residual").to_f32_vector(), (std::vector<float>{1.f, -2.f, 3.f}));
}

namespace {

// A model with one non-parameter state buffer (like a MoE routing bias).
class ModelWithBuffer : public model::Model {
 public:
  explicit ModelWithBuffer(std::unique_ptr<model::Model> inner)
      : inner_(std::move(inner)), bias_(Tensor::from_f32({0.5f, -1.5f}, Shape({2}))) {}
  const model::ModelConfig& config() const override { return inner_->config(); }
  backend::Backend& backend() const override { return inner_->backend(); }
  std::vector<nn::Parameter*> parameters() override { return inner_->parameters(); }
  void init(uint64_t seed) override { inner_->init(seed); }
  void sync_compute_weights() override { inner_->sync_compute_weights(); }
  float forward_backward(const Tensor& ids, const Tensor& targets, float scale) override {
    bias_.data<float>()[0] += 1.f;  // state that evolves with training
    return inner_->forward_backward(ids, targets, scale);
  }
  float loss(const Tensor& ids, const Tensor& targets) override {
    return inner_->loss(ids, targets);
  }
  Tensor logits(const Tensor& ids) override { return inner_->logits(ids); }
  double flops_per_token(int64_t t) const override { return inner_->flops_per_token(t); }
  std::vector<std::pair<std::string, Tensor*>> state_buffers() override {
    return {{"router.bias", &bias_}};
  }
  Tensor& bias() { return bias_; }

 private:
  std::unique_ptr<model::Model> inner_;
  Tensor bias_;
};

}  // namespace

TEST(Checkpoint, ModelStateBuffersAreSavedAndRestored) {
  auto be = backend::make_backend("cpu");
  const io::Config cfg = test_config();
  TempDir dir;
  ModelWithBuffer m(tiny_model(*be));
  auto t = make_trainer(m, *be, tiny_options(2, 1, 4));
  t.step();
  t.step();
  const std::string p = save(t, dir.path(), cfg);
  EXPECT_EQ(m.bias().to_f32_vector(), (std::vector<float>{2.5f, -1.5f}));
  ModelWithBuffer m2(tiny_model(*be, 9));
  auto t2 = make_trainer(m2, *be, tiny_options(2, 1, 4));
  const auto ck = verify_checkpoint(p, expectations(t2, cfg));
  restore_training_state(ck, t2);
  EXPECT_EQ(m2.bias().to_f32_vector(), (std::vector<float>{2.5f, -1.5f}));
  // A checkpoint without the buffer does not fit a model that has one.
  auto plain = tiny_model(*be);
  auto t3 = make_trainer(*plain, *be, tiny_options(2, 1, 4));
  const std::string p3 = save(t3, dir / "plain", cfg);
  try {
    verify_checkpoint(p3, expectations(t2, cfg));
    FAIL() << "not detected";
  } catch (const CheckpointError& e) {
    EXPECT_NE(
        std::string(e.what()).find("model_state.safetensors: tensor 'router.bias' is missing"),
        std::string::npos)
        << e.what();
  }
}

TEST(Retention, KeepsLastKAndEveryMth) {
  EXPECT_EQ(checkpoints_to_remove({10, 20, 30, 40, 50}, 2, 0), (std::vector<int64_t>{10, 20, 30}));
  EXPECT_EQ(checkpoints_to_remove({50, 10, 40, 20, 30}, 2, 20), (std::vector<int64_t>{10, 30}));
  EXPECT_EQ(checkpoints_to_remove({10}, 0, 0), (std::vector<int64_t>{}));  // newest always kept
  EXPECT_EQ(checkpoints_to_remove({}, 3, 0), (std::vector<int64_t>{}));
  // Step 20 was just written after a resume went back past a step-30 that
  // failed verification: 20 is kept, 30 is left alone, 10 goes.
  EXPECT_EQ(checkpoints_to_remove({10, 20, 30}, 1, 0, 20), (std::vector<int64_t>{10}));
  EXPECT_EQ(checkpoints_to_remove({10, 20, 30, 40}, 2, 0, 20), (std::vector<int64_t>{}));
}

TEST(Retention, WriterAppliesIt) {
  auto be = backend::make_backend("cpu");
  const io::Config cfg = test_config();
  TempDir dir;
  auto m = tiny_model(*be);
  auto t = make_trainer(*m, *be, tiny_options(1, 1, 6));
  for (int i = 0; i < 6; ++i) {
    t.step();
    CheckpointState st;
    capture_training_state(t, st);
    write_checkpoint(dir.path(), st, {2, 3});
  }
  EXPECT_EQ(list_checkpoint_steps(dir.path()), (std::vector<int64_t>{3, 5, 6}));
}

TEST(Retention, LeftoversOfAnInterruptedSaveOrDeleteAreCleaned) {
  TempDir dir;
  namespace fs = std::filesystem;
  const fs::path root = dir.path();
  fs::create_directories(root / "step-00000010");  // finished: has its manifest
  std::ofstream(root / "step-00000010" / kCheckpointManifestFile) << "{}";
  fs::create_directories(root / "step-00000020");  // half deleted: manifest gone
  std::ofstream(root / "step-00000020" / "params.safetensors") << "x";
  fs::create_directories(root / ".del-step-00000005-7");
  fs::create_directories(root / ".tmp-step-00000030-7");
  fs::create_directories(root / ".old-step-00000010-7");
  std::ofstream(root / "latest.tmp.7.00000000deadbeef") << "step-00000030\n";
  std::ofstream(root / "latest") << "step-00000010\n";
  EXPECT_EQ(clean_checkpoint_leftovers(root.string()).size(), 5u);
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(root)) left.push_back(e.path().filename().string());
  std::sort(left.begin(), left.end());
  EXPECT_EQ(left, (std::vector<std::string>{"latest", "step-00000010"}));
  EXPECT_TRUE(clean_checkpoint_leftovers((root / "absent").string()).empty());
  // With no complete checkpoint left, manifest-less directories are damage
  // the loader must report, not leftovers to remove.
  fs::remove(root / "step-00000010" / kCheckpointManifestFile);
  EXPECT_TRUE(clean_checkpoint_leftovers(root.string()).empty());
  EXPECT_TRUE(fs::exists(root / "step-00000010"));
}

TEST(Retention, DirectoryNames) {
  EXPECT_EQ(checkpoint_dir_name(20), "step-00000020");
  EXPECT_EQ(checkpoint_step_from_name("step-00000020"), 20);
  EXPECT_FALSE(checkpoint_step_from_name(".tmp-step-00000020-12").has_value());
  EXPECT_FALSE(checkpoint_step_from_name("step-").has_value());
  EXPECT_FALSE(checkpoint_step_from_name("step-12a").has_value());
  EXPECT_FALSE(checkpoint_step_from_name("latest").has_value());
}

TEST(AsyncCheckpointer, WritesInTheBackgroundAndWaitsForThePrevious) {
  auto be = backend::make_backend("cpu");
  TempDir dir;
  auto m = tiny_model(*be);
  auto t = make_trainer(*m, *be, tiny_options(2, 1, 4));
  int written = 0;
  AsyncCheckpointer ck(dir.path(), {5, 0}, true, [&](const WrittenCheckpoint&) { ++written; });
  for (int i = 0; i < 3; ++i) {
    t.step();
    const double stall = ck.save([&](CheckpointState& st) { capture_training_state(t, st); });
    EXPECT_GE(stall, 0.0);
  }
  ck.wait();
  EXPECT_EQ(written, 3);
  ASSERT_TRUE(ck.last_written().has_value());
  EXPECT_EQ(ck.last_written()->step, 3);
  EXPECT_EQ(list_checkpoint_steps(dir.path()), (std::vector<int64_t>{1, 2, 3}));
  // The snapshot, not the live state, was written: params of step 3 exactly.
  auto st = io::SafetensorsFile::open(dir / "step-00000003/params.safetensors");
  for (auto* p : m->parameters())
    EXPECT_EQ(st.get(p->name).to_f32_vector(), p->value.to_f32_vector()) << p->name;
}

TEST(AsyncCheckpointer, AWriteErrorSurfacesAtTheNextSave) {
  auto be = backend::make_backend("cpu");
  TempDir dir;
  auto m = tiny_model(*be);
  auto t = make_trainer(*m, *be, tiny_options(2, 1, 4));
  // The root is a file: the write fails in the background thread.
  io::write_file_atomic(dir / "root", "x");
  AsyncCheckpointer ck(dir / "root", {}, true);
  ck.save([&](CheckpointState& st) { capture_training_state(t, st); });
  EXPECT_THROW(ck.wait(), IoError);
}

TEST(Metrics, KeepThroughDropsLaterStepsAndTornLines) {
  TempDir dir;
  const std::string p = dir / "metrics.jsonl";
  io::write_file_atomic(
      p,
      "{\"step\":1,\"loss\":3}\n{\"step\":2,\"loss\":2}\n{\"step\":3,\"loss\":1}\n"
      "{\"step\":4,\"lo");
  train::keep_metrics_through(p, 2);
  EXPECT_EQ(io::read_file_bytes(p), "{\"step\":1,\"loss\":3}\n{\"step\":2,\"loss\":2}\n");
  train::StepMetrics m;
  m.step = 3;
  m.ckpt_stall_s = 0.5;
  EXPECT_NE(train::metrics_json(m).find("\"ckpt_stall_s\":0.5"), std::string::npos);
  m.ckpt_stall_s.reset();
  EXPECT_EQ(train::metrics_json(m).find("ckpt_stall_s"), std::string::npos);
}

TEST(CheckpointConfig, DeepseekOnlyKeysAreComparedOnlyForDeepseekRuns) {
  const nlohmann::json ckpt = {
      {"model.arch", "gpt2"}, {"model.n_layer", 2}, {"model.bias_update_rate", 0.001}};
  nlohmann::json run = ckpt;
  run["model.bias_update_rate"] = 0.5;
  EXPECT_EQ(resilience::config_difference(ckpt, run), "");
  run["model.n_layer"] = 4;
  EXPECT_EQ(resilience::config_difference(ckpt, run),
            "model.n_layer is 2 in the checkpoint but 4 in this run");
  nlohmann::json ds = ckpt, ds_run = ckpt;
  ds["model.arch"] = ds_run["model.arch"] = "deepseek";
  ds_run["model.bias_update_rate"] = 0.5;
  EXPECT_EQ(resilience::config_difference(ds, ds_run),
            "model.bias_update_rate is 0.001 in the checkpoint but 0.5 in this run");
}
