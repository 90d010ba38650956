// Loss-spike detector: the robust z-score against hand-computed medians and
// MADs, no verdict before min_history, a real jump flagged and kept out of
// the window, the min_delta guard on flat curves, and a JSON round trip that
// makes a resumed detector decide exactly like the original.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "core/error.h"
#include "core/rng.h"
#include "resilience/loss_spike_detector.h"
#include "resilience/nan_policy.h"

using namespace keel;
using namespace keel::resilience;

TEST(LossSpike, MedianOfOddAndEven) {
  EXPECT_DOUBLE_EQ(median_of({3, 1, 2}), 2);
  EXPECT_DOUBLE_EQ(median_of({4, 1, 3, 2}), 2.5);
  EXPECT_DOUBLE_EQ(median_of({}), 0);
}

TEST(LossSpike, ZScoreMatchesHandComputation) {
  LossSpikeOptions o;
  o.min_history = 5;
  o.window = 5;
  o.z_threshold = 6;
  o.min_delta = 0;
  LossSpikeDetector d(o);
  for (double x : {1.0, 2.0, 3.0, 4.0, 5.0}) EXPECT_FALSE(d.observe(x).spike);
  // window {1..5}: median 3, |x-3| = {2,1,0,1,2} -> MAD 1, sigma 1.4826.
  const SpikeVerdict v = d.observe(10.0);
  EXPECT_DOUBLE_EQ(v.median, 3.0);
  EXPECT_NEAR(v.z, 7.0 / 1.4826, 1e-12);
  EXPECT_FALSE(v.spike);  // 4.72 < 6
  // Window is now {2,3,4,5,10}: median 4, deviations {2,1,0,1,6} -> MAD 1.
  const SpikeVerdict w = d.observe(13.0);
  EXPECT_DOUBLE_EQ(w.median, 4.0);
  EXPECT_NEAR(w.z, 9.0 / 1.4826, 1e-12);
  EXPECT_TRUE(w.spike);
  EXPECT_EQ(d.size(), 5);  // the spike did not enter
}

TEST(LossSpike, NoisyDescentHasNoSpikeAndJumpIsCaught) {
  LossSpikeDetector d;  // documented defaults
  const Rng rng(7, 0);
  int spikes = 0;
  double loss = 6.0;
  for (int s = 0; s < 300; ++s) {
    loss = 6.0 * std::exp(-s / 200.0) + 2.0;
    const double noise = 0.05 * (2.0 * double(rng.uniform(uint64_t(s))) - 1.0);
    spikes += d.observe(loss + noise).spike;
  }
  EXPECT_EQ(spikes, 0);
  EXPECT_TRUE(d.observe(loss + 2.0).spike);
  EXPECT_FALSE(d.observe(loss).spike);
}

TEST(LossSpike, NoVerdictBeforeHistoryAndFlatCurveNeedsDelta) {
  LossSpikeOptions o;
  o.min_history = 10;
  LossSpikeDetector d(o);
  for (int i = 0; i < 9; ++i) EXPECT_FALSE(d.observe(i == 5 ? 100.0 : 1.0).spike);
  for (int i = 0; i < 20; ++i) d.observe(1.0);
  // MAD 0: any rise is an enormous z, but a rise under min_delta is noise.
  EXPECT_FALSE(d.observe(1.0 + 0.4).spike);
  EXPECT_TRUE(d.observe(1.0 + 0.6).spike);
  EXPECT_FALSE(d.observe(std::nan("")).spike);
}

TEST(LossSpike, StateRoundTripDecidesTheSame) {
  LossSpikeOptions o;
  o.window = 16;
  o.min_history = 8;
  o.min_delta = 0.01;
  LossSpikeDetector a(o);
  const Rng rng(3, 0);
  std::vector<double> xs;
  for (int i = 0; i < 200; ++i)
    xs.push_back(3.0 + 0.25 * double(rng.uniform(uint64_t(i))) + (i % 37 == 36 ? 1.0 : 0.0));
  for (int i = 0; i < 100; ++i) a.observe(xs[size_t(i)]);
  LossSpikeDetector b(o);
  b.from_json(nlohmann::json::parse(a.to_json().dump()));
  int spikes = 0;
  for (int i = 100; i < 200; ++i) {
    const SpikeVerdict va = a.observe(xs[size_t(i)]), vb = b.observe(xs[size_t(i)]);
    EXPECT_EQ(va.spike, vb.spike);
    EXPECT_EQ(va.z, vb.z);
    spikes += va.spike;
  }
  EXPECT_GT(spikes, 0);
  EXPECT_THROW(b.from_json(nlohmann::json{{"window", {1, "x"}}}), IoError);
  EXPECT_THROW(b.from_json(nlohmann::json::array()), IoError);
}

TEST(NanPolicy, SkipThenRollbackOnRepeat) {
  NanPolicy p;  // 2 within 10 steps
  EXPECT_EQ(p.observe(5, false), NanAction::Continue);
  EXPECT_EQ(p.observe(6, true), NanAction::Skipped);
  EXPECT_EQ(p.observe(7, false), NanAction::Continue);
  EXPECT_EQ(p.observe(9, true), NanAction::Rollback);
  // After a rollback the count starts over; far-apart NaNs only skip.
  EXPECT_EQ(p.observe(10, true), NanAction::Skipped);
  EXPECT_EQ(p.observe(30, true), NanAction::Skipped);
  EXPECT_EQ(p.observe(50, true), NanAction::Skipped);
  NanPolicy strict(NanPolicyOptions{1, 10});
  EXPECT_EQ(strict.observe(1, true), NanAction::Rollback);
}
