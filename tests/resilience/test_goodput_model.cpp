// The goodput model of `keel plan` against its own discrete-event simulation
// (an independent computation of the same cluster), Young-Daly, and the
// properties a planner must have.
#include <gtest/gtest.h>

#include <cmath>

#include "core/error.h"
#include "resilience/goodput_model.h"

namespace keel::resilience {
namespace {

ClusterModel cluster() {
  ClusterModel m;
  m.chips = 64;
  m.mtbf_chip_s = 64 * 600.0;  // one failure every 10 minutes
  m.step_s = 1.0;
  m.restart_s = 20;
  m.startup_s = 30;
  m.checkpoint_s = 5;
  m.checkpoint_every = 50;
  m.steps = 20000;
  return m;
}

TEST(GoodputModel, SharesOfTheWallTimeSumToOne) {
  ClusterModel m = cluster();
  m.snapshot_s = 0.2;
  m.snapshot_every = 2;
  const GoodputTerms g = predict_goodput(m);
  EXPECT_NEAR(g.goodput + g.snapshots + g.checkpoints + g.restarts + g.rework + g.startup, 1.0,
              1e-12);
  EXPECT_GT(g.goodput, 0.5);
  EXPECT_NEAR(g.failures_per_day, 144.0, 1e-9);
}

TEST(GoodputModel, PredictionAgreesWithTheSimulation) {
  // Disk only, then snapshots every step: ~35 failures per run either way.
  for (int64_t snap : {0, 1}) {
    ClusterModel m = cluster();
    m.snapshot_every = snap;
    m.snapshot_s = snap ? 0.05 : 0.0;
    const double predicted = predict_goodput(m).goodput;
    const SimulationResult s = simulate_goodput(m, 200, 7);
    EXPECT_NEAR(s.mean, predicted, 0.01) << "snapshot_every " << snap;
    EXPECT_GT(s.mean_failures, 20);
    EXPECT_LE(s.p05, s.p50);
    EXPECT_LE(s.p50, s.p95);
  }
}

TEST(GoodputModel, SnapshotsEveryStepLoseAboutHalfAStep) {
  ClusterModel m = cluster();
  m.snapshot_every = 1;
  m.snapshot_s = 0.05;
  m.snapshot_loss = 0;  // every failure finds its copy on the buddy
  const GoodputTerms g = predict_goodput(m);
  EXPECT_DOUBLE_EQ(g.steps_lost_per_failure, 0.5);
  const SimulationResult s = simulate_goodput(m, 100, 3);
  EXPECT_LE(s.mean_steps_lost_per_failure, 1.0);
  EXPECT_GT(s.mean_steps_lost_per_failure, 0.3);
  // Without snapshots a failure costs half a checkpoint interval.
  m.snapshot_every = 0;
  EXPECT_DOUBLE_EQ(predict_goodput(m).steps_lost_per_failure, 25.0);
}

TEST(GoodputModel, MoreFailuresLessGoodput) {
  ClusterModel m = cluster();
  double last = 1.0;
  for (double mtbf : {1e9, 1e6, 1e5, 4e4}) {
    m.mtbf_chip_s = mtbf;
    const double g = predict_goodput(m).goodput;
    EXPECT_LT(g, last) << mtbf;
    last = g;
  }
  m.mtbf_chip_s = 64 * 10.0;  // a failure every 10 s with 20 s restarts: nothing finishes
  EXPECT_EQ(predict_goodput(m).goodput, 0.0);
}

TEST(GoodputModel, OptimumNearYoungDalyWhenCheckpointsAreCheap) {
  ClusterModel m = cluster();
  m.mtbf_chip_s = 64 * 36000.0;  // a failure every 10 hours
  m.steps = 0;
  const IntervalChoice c = best_intervals(m);
  // Young-Daly: sqrt(2 * 5 s * 36000 s) = 600 s = 600 steps.
  EXPECT_NEAR(double(c.young_daly_checkpoint), 600.0, 1.0);
  EXPECT_NEAR(double(c.best_checkpoint), 600.0, 600.0 * 0.1);
  ClusterModel at = m;
  at.checkpoint_every = c.best_checkpoint;
  for (int64_t k : {c.best_checkpoint / 2, c.best_checkpoint * 2}) {
    at.checkpoint_every = k;
    EXPECT_LE(predict_goodput(at).goodput, c.best_goodput);
  }
}

TEST(GoodputModel, SimulationIsDeterministicPerSeed) {
  const ClusterModel m = cluster();
  EXPECT_EQ(simulate_goodput(m, 20, 5).goodput, simulate_goodput(m, 20, 5).goodput);
  EXPECT_NE(simulate_goodput(m, 20, 5).goodput, simulate_goodput(m, 20, 6).goodput);
}

TEST(GoodputModel, BadInputNamesTheField) {
  ClusterModel m = cluster();
  m.mtbf_chip_s = 0;
  try {
    predict_goodput(m);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("MTBF"), std::string::npos) << e.what();
  }
  m = cluster();
  m.checkpoint_every = 0;
  EXPECT_THROW(predict_goodput(m), Error);
  m = cluster();
  m.steps = 0;
  EXPECT_THROW(simulate_goodput(m, 10, 1), Error);
}

}  // namespace
}  // namespace keel::resilience
