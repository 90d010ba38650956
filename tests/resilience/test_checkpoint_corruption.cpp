// A damaged or foreign checkpoint is never used: a truncated safetensors
// file, a flipped byte in a tensor, a manifest with a wrong checksum, a
// missing file, a manifest from a newer format version and a checkpoint of
// another config are each detected with a message naming the file and the
// reason; the loader then falls back to the next older verified checkpoint,
// and stops (never starts over) when none verifies.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>

#include "checkpoint_test_util.h"
#include "io/atomic_file.h"

using namespace keel;
using namespace keel::resilience;
using namespace keel::resilience::testing;
using keel::train::testing::make_trainer;
using keel::train::testing::tiny_model;
using keel::train::testing::tiny_options;

namespace {

struct Case {
  const char* name;
  const char* file;    // the file the message must name
  const char* reason;  // a phrase the message must contain
  std::function<void(const std::string& ckpt_dir)> damage;
  bool other_config = false;  // the run's config differs instead
};

void rewrite(const std::string& path, const std::function<void(std::string&)>& edit) {
  std::string b = io::read_file_bytes(path);
  edit(b);
  io::write_file_atomic(path, b);
}

void replace_once(std::string& s, const std::string& from, const std::string& to) {
  const size_t at = s.find(from);
  ASSERT_NE(at, std::string::npos) << from;
  s.replace(at, from.size(), to);
}

const std::vector<Case>& cases() {
  static const std::vector<Case> c = {
      {"truncated safetensors", "params.safetensors", "truncated",
       [](const std::string& d) {
         const auto p = d + "/params.safetensors";
         std::filesystem::resize_file(p, std::filesystem::file_size(p) - 100);
       }},
      {"flipped byte in a tensor", "optimizer.safetensors", "checksum mismatch",
       [](const std::string& d) {
         rewrite(d + "/optimizer.safetensors", [](std::string& b) { b[b.size() - 7] ^= 0x10; });
       }},
      {"manifest with a wrong checksum", "model_state.safetensors", "checksum mismatch",
       [](const std::string& d) {
         rewrite(d + "/manifest.json", [&](std::string& m) {
           const auto man = parse_manifest(m, "m");
           for (const auto& f : man.files)
             if (f.name == "model_state.safetensors")
               replace_once(m, f.xxh3,
                            f.xxh3[0] == '0' ? "1" + f.xxh3.substr(1) : "0" + f.xxh3.substr(1));
         });
       }},
      {"missing file", "params.safetensors", "file is missing",
       [](const std::string& d) { std::filesystem::remove(d + "/params.safetensors"); }},
      {"missing manifest", "manifest.json", "manifest is missing",
       [](const std::string& d) { std::filesystem::remove(d + "/manifest.json"); }},
      {"newer format version", "manifest.json", "format version 2 is newer than this keel reads",
       [](const std::string& d) {
         rewrite(d + "/manifest.json", [](std::string& m) {
           replace_once(m, "\"format_version\": 1", "\"format_version\": 2");
         });
       }},
      {"malformed manifest", "manifest.json", "manifest JSON is malformed",
       [](const std::string& d) {
         rewrite(d + "/manifest.json", [](std::string& m) { m.resize(m.size() / 2); });
       }},
      {"checkpoint of another config", "manifest.json", "checkpoint of another config: train.lr is",
       [](const std::string&) {}, true},
  };
  return c;
}

class Corruption : public ::testing::TestWithParam<size_t> {};

}  // namespace

TEST_P(Corruption, IsDetectedNamedAndSkippedForTheOlderCheckpoint) {
  const Case& c = cases()[GetParam()];
  auto be = backend::make_backend("cpu");
  io::Config cfg = test_config();
  TempDir dir;
  auto m = tiny_model(*be);
  auto t = make_trainer(*m, *be, tiny_options(2, 1, 4));
  t.step();
  const std::string older = save(t, dir.path(), cfg);
  t.step();
  const std::string newer = save(t, dir.path(), cfg);
  io::Config run_cfg = cfg;
  if (c.other_config) {
    // Both checkpoints are then foreign: the fallback is checked by damaging
    // only the newer one's config entry instead.
    rewrite(newer + "/manifest.json", [](std::string& s) {
      replace_once(s, "\"train.lr\": \"0.002\"", "\"train.lr\": \"0.5\"");
    });
  } else {
    c.damage(newer);
  }
  const CheckpointExpectations want = expectations(t, run_cfg);
  // 1. verify names the file and the reason.
  try {
    verify_checkpoint(newer, want);
    FAIL() << c.name << ": not detected";
  } catch (const CheckpointError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(newer + "/" + c.file), std::string::npos) << c.name << ": " << msg;
    EXPECT_NE(msg.find(c.reason), std::string::npos) << c.name << ": " << msg;
  }
  // 2. the loader reports it and falls back to the older verified checkpoint.
  std::vector<RejectedCheckpoint> rejected;
  auto ck = load_newest_verified(dir.path(), want,
                                 [&](const RejectedCheckpoint& r) { rejected.push_back(r); });
  ASSERT_TRUE(ck.has_value()) << c.name;
  EXPECT_EQ(ck->path, older);
  EXPECT_EQ(ck->manifest.step, 1);
  ASSERT_EQ(rejected.size(), 1u);
  EXPECT_EQ(rejected[0].path, newer);
  EXPECT_NE(rejected[0].reason.find(c.reason), std::string::npos) << rejected[0].reason;
  // 3. with the older one damaged the same way, nothing verifies: the loader stops.
  if (c.other_config)
    rewrite(older + "/manifest.json", [](std::string& s) {
      replace_once(s, "\"train.lr\": \"0.002\"", "\"train.lr\": \"0.5\"");
    });
  else
    c.damage(older);
  try {
    load_newest_verified(dir.path(), want);
    FAIL() << c.name << ": loaded although no checkpoint verifies";
  } catch (const CheckpointError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("none of the 2 checkpoints verifies"), std::string::npos) << msg;
    EXPECT_NE(msg.find(older + "/" + c.file), std::string::npos) << msg;
    EXPECT_NE(msg.find(newer + "/" + c.file), std::string::npos) << msg;
  }
}

INSTANTIATE_TEST_SUITE_P(Checkpoint, Corruption, ::testing::Range<size_t>(0, 8),
                         [](const ::testing::TestParamInfo<size_t>& i) {
                           std::string n = cases()[i.param].name;
                           for (auto& ch : n)
                             if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           return n;
                         });

TEST(Corruption, ATensorOfAnotherShapeIsRejected) {
  auto be = backend::make_backend("cpu");
  const io::Config cfg = test_config();
  TempDir dir;
  auto m = tiny_model(*be);
  auto t = make_trainer(*m, *be, tiny_options(2, 1, 4));
  const std::string p = save(t, dir.path(), cfg);
  // A wider model of the same config map (the map is not what differs here).
  auto cfg2 = keel::train::testing::tiny_model_config();
  cfg2.n_embd = 64;
  auto m2 = model::make_model(cfg2, *be);
  auto t2 = make_trainer(*m2, *be, tiny_options(2, 1, 4));
  try {
    verify_checkpoint(p, expectations(t2, cfg));
    FAIL() << "not detected";
  } catch (const CheckpointError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(p + "/params.safetensors: tensor '"), std::string::npos) << msg;
    EXPECT_NE(msg.find("but this run's model has"), std::string::npos) << msg;
  }
}

TEST(Corruption, AnotherTokenizerIsRejected) {
  auto be = backend::make_backend("cpu");
  const io::Config cfg = test_config();
  TempDir dir;
  auto m = tiny_model(*be);
  auto t = make_trainer(*m, *be, tiny_options(2, 1, 4));
  const std::string p = save(t, dir.path(), cfg);
  auto want = expectations(t, cfg);
  want.tokenizer_id = "another";
  EXPECT_THROW(verify_checkpoint(p, want), CheckpointError);
}

TEST(Corruption, ManifestFieldsAreValidated) {
  const std::string good = manifest_to_json(CheckpointManifest{});
  EXPECT_NO_THROW(parse_manifest(good, "m.json"));
  auto expect_error = [&](std::string text, const std::string& phrase) {
    try {
      parse_manifest(text, "m.json");
      ADD_FAILURE() << "accepted: " << text;
    } catch (const CheckpointError& e) {
      EXPECT_NE(std::string(e.what()).find(phrase), std::string::npos) << e.what();
      EXPECT_EQ(std::string(e.what()).rfind("m.json: ", 0), 0u) << e.what();
    }
  };
  std::string s = good;
  replace_once(s, "\"step\": 0", "\"step\": \"zero\"");
  expect_error(s, "field 'step' has the wrong type");
  s = good;
  replace_once(s, "\"format\": \"keel-checkpoint\"", "\"format\": \"other\"");
  expect_error(s, "field 'format' is 'other'");
  s = good;
  replace_once(s, "\"files\": []",
               "\"files\": [{\"name\": \"../x\", \"bytes\": 1, \"xxh3\": \"0000000000000000\"}]");
  expect_error(s, "not a plain file name");
  s = good;
  replace_once(s, "\"files\": []",
               "\"files\": [{\"name\": \"a\", \"bytes\": 1, \"xxh3\": \"xyz\"}]");
  expect_error(s, "is not 16 lowercase hex digits");
  expect_error("[1]", "not a JSON object");
}
