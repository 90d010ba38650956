// Config loading: the embedded default equals configs/tiny.toml, and every
// kind of bad input is a ConfigError naming the source, the key and the line.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "core/error.h"
#include "io/config.h"

using keel::ConfigError;
using namespace keel::io;

namespace {

// The message of the ConfigError `f` throws ("" if it throws nothing).
template <class F>
std::string config_error(F f) {
  try {
    f();
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

std::string read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

TEST(Config, EmbeddedDefaultIsConfigsTiny) {
  EXPECT_EQ(std::string(default_config_toml()), read(KEEL_SOURCE_DIR "/configs/tiny.toml"));
  const Config c = default_config();
  EXPECT_EQ(c.model.arch, "gpt2");
  EXPECT_EQ(c.data.tokenizer, "bpe");
  EXPECT_EQ(c.run.dir, "runs/tiny");
  EXPECT_NO_THROW(validate_config(c));
}

TEST(Config, ShippedConfigsLoadAndValidate) {
  for (const char* name : {"tiny", "gpt2-124m", "llama-small"}) {
    const Config c = load_config(std::string(KEEL_SOURCE_DIR "/configs/") + name + ".toml");
    EXPECT_NO_THROW(validate_config(c)) << name;
  }
  const Config g = load_config(KEEL_SOURCE_DIR "/configs/gpt2-124m.toml");
  EXPECT_EQ(g.model.n_layer, 12);
  EXPECT_EQ(g.model.n_embd, 768);
  EXPECT_EQ(g.data.tokenizer, "gpt2");
}

TEST(Config, ParsesTypedValues) {
  const Config c = parse_config(
      "[model]\narch = \"llama\"\nn_layer = 3\ncompute_dtype = \"bf16\"\nrecompute = true\n"
      "[train]\nlr = 3e-4\nmin_lr = 0\nseed = 7\n",
      "t.toml");
  EXPECT_EQ(c.model.arch, "llama");
  EXPECT_EQ(c.model.n_layer, 3);
  EXPECT_EQ(c.model.compute_dtype, keel::DType::BF16);
  EXPECT_TRUE(c.model.recompute);
  EXPECT_DOUBLE_EQ(c.train.lr, 3e-4);
  EXPECT_DOUBLE_EQ(c.train.min_lr, 0.0);  // an integer is accepted for a float key
  EXPECT_EQ(c.train.seed, 7u);
  EXPECT_EQ(c.origin.at("train.lr"), "t.toml:7");
}

TEST(Config, UnknownKeyNamesFileKeyAndLine) {
  const std::string e =
      config_error([] { parse_config("[train]\nsteps = 10\nlrr = 0.1\n", "my.toml"); });
  EXPECT_NE(e.find("my.toml:3"), std::string::npos) << e;
  EXPECT_NE(e.find("unknown key 'train.lrr'"), std::string::npos) << e;
  EXPECT_NE(e.find("did you mean 'train.lr'"), std::string::npos) << e;
}

TEST(Config, UnknownSection) {
  const std::string e = config_error([] { parse_config("\n[optim]\nlr = 1\n", "s.toml"); });
  EXPECT_NE(e.find("s.toml:2"), std::string::npos) << e;
  EXPECT_NE(e.find("unknown section 'optim'"), std::string::npos) << e;
}

TEST(Config, WrongTypeNamesKeyAndLine) {
  std::string e = config_error([] { parse_config("[train]\n\nlr = \"fast\"\n", "w.toml"); });
  EXPECT_NE(e.find("w.toml:3: train.lr: expected a number, got a string"), std::string::npos) << e;
  e = config_error([] { parse_config("[model]\nn_layer = 2.5\n", "w.toml"); });
  EXPECT_NE(e.find("w.toml:2: model.n_layer: expected an integer, got a float"), std::string::npos)
      << e;
  e = config_error([] { parse_config("[model]\nrecompute = 1\n", "w.toml"); });
  EXPECT_NE(e.find("model.recompute: expected a boolean"), std::string::npos) << e;
  e = config_error([] { parse_config("model = 3\n", "w.toml"); });
  EXPECT_NE(e.find("w.toml:1: model: expected a table"), std::string::npos) << e;
}

TEST(Config, BadValues) {
  std::string e = config_error([] { parse_config("[train]\nbackend = \"gpu\"\n", "b.toml"); });
  EXPECT_NE(e.find("b.toml:2: train.backend: unknown value \"gpu\""), std::string::npos) << e;
  EXPECT_NE(e.find("\"cpu\", \"ref\""), std::string::npos) << e;
  e = config_error([] { parse_config("[model]\ncompute_dtype = \"f64\"\n", "b.toml"); });
  EXPECT_NE(e.find("model.compute_dtype: unknown value \"f64\""), std::string::npos) << e;
  e = config_error([] { parse_config("[train]\nbatch_size = 0\n", "b.toml"); });
  EXPECT_NE(e.find("b.toml:2: train.batch_size: must be > 0, got 0"), std::string::npos) << e;
  e = config_error([] { parse_config("[train]\nweight_decay = -0.1\n", "b.toml"); });
  EXPECT_NE(e.find("train.weight_decay: must be >= 0"), std::string::npos) << e;
  e = config_error([] { parse_config("[train]\nbeta2 = 1.0\n", "b.toml"); });
  EXPECT_NE(e.find("train.beta2: must be in [0, 1)"), std::string::npos) << e;
  e = config_error([] { parse_config("[train]\nlr = nan\n", "b.toml"); });
  EXPECT_NE(e.find("train.lr: must be a finite number"), std::string::npos) << e;
}

TEST(Config, SyntaxErrorHasLine) {
  const std::string e = config_error([] { parse_config("[train]\nsteps = \n", "x.toml"); });
  EXPECT_NE(e.find("x.toml:2: TOML syntax error"), std::string::npos) << e;
}

TEST(Config, MissingFile) {
  const std::string e = config_error([] { load_config("/nonexistent/dir/c.toml"); });
  EXPECT_NE(e.find("/nonexistent/dir/c.toml"), std::string::npos) << e;
}

TEST(Config, OverridesAreTypedBySchema) {
  Config c = default_config();
  apply_overrides(c, {"train.lr=3e-4", "model.n_layer=2", "model.compute_dtype=bf16",
                      "run.dir=\"/tmp/x y\"", "model.recompute=true", " train.steps = 5 "});
  EXPECT_DOUBLE_EQ(c.train.lr, 3e-4);
  EXPECT_EQ(c.model.n_layer, 2);
  EXPECT_EQ(c.model.compute_dtype, keel::DType::BF16);
  EXPECT_EQ(c.run.dir, "/tmp/x y");
  EXPECT_TRUE(c.model.recompute);
  EXPECT_EQ(c.train.steps, 5);
  EXPECT_EQ(c.origin.at("train.lr"), "override 'train.lr=3e-4'");
}

TEST(Config, OverrideErrorsNameTheOverride) {
  Config c = default_config();
  std::string e = config_error([&] { apply_override(c, "train.stepz=3"); });
  EXPECT_NE(
      e.find("override 'train.stepz=3': unknown key 'train.stepz' (did you mean 'train.steps'?)"),
      std::string::npos)
      << e;
  e = config_error([&] { apply_override(c, "train.steps=many"); });
  EXPECT_NE(e.find("override 'train.steps=many': train.steps: expected an integer, got 'many'"),
            std::string::npos)
      << e;
  e = config_error([&] { apply_override(c, "train.steps=10x"); });
  EXPECT_NE(e.find("expected an integer"), std::string::npos) << e;
  e = config_error([&] { apply_override(c, "train.steps=-1"); });
  EXPECT_NE(e.find("train.steps: must be > 0, got -1"), std::string::npos) << e;
  e = config_error([&] { apply_override(c, "train.backend=tpu"); });
  EXPECT_NE(e.find("unknown value \"tpu\""), std::string::npos) << e;
  e = config_error([&] { apply_override(c, "train.steps"); });
  EXPECT_NE(e.find("expected key=value"), std::string::npos) << e;
  e = config_error([&] { apply_override(c, "model.recompute=yes"); });
  EXPECT_NE(e.find("expected a boolean"), std::string::npos) << e;
}

TEST(Config, CrossFieldChecksNameWhereTheKeyWasSet) {
  Config c = parse_config("[train]\nlr = 1e-3\nmin_lr = 1e-2\n", "r.toml");
  std::string e = config_error([&] { validate_config(c); });
  EXPECT_NE(e.find("r.toml:3: train.min_lr: must be <= train.lr"), std::string::npos) << e;
  c = default_config();
  apply_override(c, "model.n_head=5");
  e = config_error([&] { validate_config(c); });
  EXPECT_NE(e.find("override 'model.n_head=5': model.n_head: must divide model.n_embd"),
            std::string::npos)
      << e;
  c = default_config();
  apply_override(c, "model.max_seq_len=64");
  e = config_error([&] { validate_config(c); });
  EXPECT_NE(e.find("model.max_seq_len: must be >= train.seq_len"), std::string::npos) << e;
}

TEST(Config, TomlRoundTrip) {
  Config c = default_config();
  apply_overrides(
      c, {"train.lr=0.00123", "run.dir=a\"b\\c", "model.compute_dtype=bf16", "train.min_lr=0"});
  const std::string text = config_to_toml(c);
  const Config back = parse_config(text, "roundtrip.toml");
  EXPECT_EQ(config_to_toml(back), text);
  EXPECT_EQ(back.run.dir, "a\"b\\c");
  EXPECT_DOUBLE_EQ(back.train.lr, 0.00123);
  EXPECT_EQ(back.model.compute_dtype, keel::DType::BF16);
}
