// How a configuration becomes trainer options: the optimizer settings that a
// distributed mode changes for every rank.
#include <gtest/gtest.h>

#include "core/error.h"
#include "io/config.h"
#include "train/run_setup.h"

using namespace keel;

namespace {

io::Config with(const std::vector<std::string>& overrides) {
  io::Config cfg;
  cfg.data.corpus = "corpus";
  io::apply_overrides(cfg, overrides);
  io::validate_config(cfg);
  return cfg;
}

}  // namespace

TEST(RunOptions, UpdateBeta1AppliesToCompressedUpdatesOnly) {
  EXPECT_DOUBLE_EQ(train::run_trainer_options(with({"train.beta1=0.85"}), 1e9).adamw.beta1, 0.85);
  const std::vector<std::string> update = {"dist.compression=topk", "dist.compress_update=true",
                                           "train.beta1=0.85"};
  EXPECT_DOUBLE_EQ(train::run_trainer_options(with(update), 1e9).adamw.beta1, 0.85);
  std::vector<std::string> lower = update;
  lower.push_back("dist.update_beta1=0.7");
  EXPECT_DOUBLE_EQ(train::run_trainer_options(with(lower), 1e9).adamw.beta1, 0.7);
}

TEST(RunOptions, UpdateBeta1OutOfRangeOrWithoutCompressedUpdatesIsNamed) {
  try {
    with({"dist.update_beta1=0.7"});
    FAIL() << "accepted dist.update_beta1 without dist.compress_update";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("dist.update_beta1"), std::string::npos) << e.what();
  }
  try {
    with({"dist.compression=topk", "dist.compress_update=true", "dist.update_beta1=1"});
    FAIL() << "accepted dist.update_beta1 = 1";
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("must be in [0, 1)"), std::string::npos) << e.what();
  }
}
