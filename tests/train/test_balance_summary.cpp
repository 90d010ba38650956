// BalanceSummary: only steps after the warm-up count, skipped steps and dense
// models (no expert load) are left out, the figures are what the loads give,
// and the last evaluation's routing balance is kept.
#include <gtest/gtest.h>

#include "train/balance_summary.h"

using keel::train::BalanceSummary;
using keel::train::StepMetrics;

namespace {

StepMetrics step(int64_t s, double load, bool skipped = false) {
  StepMetrics m;
  m.step = s;
  m.skipped = skipped;
  m.model_stats = {{"expert_load_max_mean", load}, {"routing_entropy", 2.0}};
  return m;
}

}  // namespace

TEST(BalanceSummary, CountsOnlyStepsAfterTheWarmup) {
  BalanceSummary b(3, 1.3);
  b.add(step(1, 9.0));
  b.add(step(3, 9.0));  // the last warm-up step
  // Steps 4..13 with loads 1.05, 1.10, ..., 1.50; step 9 skipped.
  for (int64_t s = 4; s <= 13; ++s) b.add(step(s, 1.0 + 0.05 * double(s - 3), s == 9));
  ASSERT_FALSE(b.empty());
  const auto j = b.json();
  EXPECT_EQ(j["from_step"].get<int64_t>(), 4);
  EXPECT_EQ(j["to_step"].get<int64_t>(), 13);
  EXPECT_EQ(j["steps"].get<int64_t>(), 9);
  EXPECT_NEAR(j["max"].get<double>(), 1.50, 1e-12);
  // Loads without step 9's 1.30: 1.05 1.10 1.15 1.20 1.25 1.35 1.40 1.45 1.50.
  EXPECT_NEAR(j["mean"].get<double>(),
              (1.05 + 1.10 + 1.15 + 1.20 + 1.25 + 1.35 + 1.40 + 1.45 + 1.50) / 9, 1e-12);
  EXPECT_NEAR(j["median"].get<double>(), 1.25, 1e-12);
  EXPECT_NEAR(j["p90"].get<double>(), 1.50, 1e-12);
  EXPECT_EQ(j["steps_above_limit"].get<int64_t>(), 4);
  EXPECT_NE(b.line().find("4 of 9 steps above 1.3"), std::string::npos) << b.line();
}

TEST(BalanceSummary, DenseModelsHaveNone) {
  BalanceSummary b(0);
  StepMetrics m;
  m.step = 5;
  b.add(m);
  EXPECT_TRUE(b.empty());
  EXPECT_TRUE(b.json().is_null());
  EXPECT_EQ(b.line(), "");
}

TEST(BalanceSummary, KeepsTheLastEvaluationsRouting) {
  BalanceSummary b(2);
  b.add(step(3, 1.2));
  EXPECT_FALSE(b.json().contains("val_load_max_mean"));
  EXPECT_EQ(b.line().find("validation"), std::string::npos) << b.line();
  for (auto [s, v] : {std::pair<int64_t, double>{4, 1.4}, {6, 1.25}}) {
    StepMetrics m = step(s, 1.1);
    m.model_stats.emplace_back("val_expert_load_max_mean", v);
    b.add(m);
  }
  const auto j = b.json();
  EXPECT_EQ(j["val_step"].get<int64_t>(), 6);
  EXPECT_DOUBLE_EQ(j["val_load_max_mean"].get<double>(), 1.25);
  EXPECT_NE(b.line().find("at step 6 (routing without jitter): 1.250"), std::string::npos)
      << b.line();
}
