// Warmup + cosine schedule values at the points that define it.
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include "train/lr_schedule.h"

using keel::train::LrSchedule;

TEST(LrSchedule, WarmupIsLinearToPeak) {
  const LrSchedule s{1e-3, 1e-4, 10, 110};
  EXPECT_DOUBLE_EQ(s.at(0), 1e-4);
  EXPECT_DOUBLE_EQ(s.at(4), 5e-4);
  EXPECT_DOUBLE_EQ(s.at(9), 1e-3);
}

TEST(LrSchedule, CosineDecaysToMinAtTheLastStep) {
  const LrSchedule s{1e-3, 1e-4, 10, 111};
  EXPECT_DOUBLE_EQ(s.at(10), 1e-3);                   // p = 0
  EXPECT_NEAR(s.at(60), 1e-4 + 0.9e-3 * 0.5, 1e-15);  // p = 0.5: halfway
  const double p = 25.0 / 100.0;
  EXPECT_NEAR(s.at(35), 1e-4 + 0.9e-3 * 0.5 * (1 + std::cos(std::numbers::pi * p)), 1e-15);
  EXPECT_DOUBLE_EQ(s.at(110), 1e-4);  // last step
  EXPECT_DOUBLE_EQ(s.at(500), 1e-4);  // clamped past the end
  for (int64_t i = 10; i < 110; ++i) EXPECT_GE(s.at(i), s.at(i + 1));
}

TEST(LrSchedule, NoWarmupStartsAtPeak) {
  const LrSchedule s{2e-3, 0, 0, 3};
  EXPECT_DOUBLE_EQ(s.at(0), 2e-3);
  EXPECT_DOUBLE_EQ(s.at(1), 1e-3);
  EXPECT_NEAR(s.at(2), 0.0, 1e-18);
  const LrSchedule one{2e-3, 1e-4, 0, 1};  // a single step runs at the peak
  EXPECT_DOUBLE_EQ(one.at(0), 2e-3);
}
