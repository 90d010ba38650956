// Goodput arithmetic on hand-written events and step records: which time
// counts as productive, what a rollback recomputes, and where lost time goes.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include "core/error.h"
#include "resilience/goodput.h"

using keel::resilience::compute_goodput;
using keel::resilience::GoodputEvent;
using keel::resilience::GoodputStep;
using keel::resilience::parse_goodput_event;

namespace {

GoodputEvent ev(double t, const char* kind, const char* det, int64_t step, int64_t lost,
                double lost_s) {
  GoodputEvent e;
  e.time = t;
  e.event = kind;
  e.detector = det;
  e.step = step;
  e.steps_lost = lost;
  e.time_lost_s = lost_s;
  return e;
}

}  // namespace

TEST(Goodput, NoFaultsAllStepsProductive) {
  std::vector<GoodputStep> steps;
  for (int i = 1; i <= 10; ++i) steps.push_back({i, 0.5, false});
  const auto g = compute_goodput({}, steps, 6.0);
  EXPECT_DOUBLE_EQ(g.productive_s, 5.0);
  EXPECT_DOUBLE_EQ(g.wall_s, 6.0);  // the hint is longer than the steps
  EXPECT_DOUBLE_EQ(g.ratio, 5.0 / 6.0);
  EXPECT_EQ(g.final_step, 10);
  EXPECT_EQ(g.steps_recomputed, 0);
  EXPECT_TRUE(g.lost_by_kind.empty());
}

TEST(Goodput, RollbackRecomputesAndLostTimeGoesToTheFaultKind) {
  // Steps 1..6, a crash at step 6, rollback to checkpoint 4, steps 5..8 again.
  std::vector<GoodputStep> steps;
  for (int i = 1; i <= 6; ++i) steps.push_back({i, 1.0, false});
  for (int i = 5; i <= 8; ++i) steps.push_back({i, 1.0, false});
  steps[2].skipped = true;  // step 3 was a skipped update
  const std::vector<GoodputEvent> events = {
      ev(1000, "start", "", 0, 0, 0),      ev(1006, "fault", "crash", 6, 0, 0),
      ev(1009, "restart", "", 4, 2, 3.0),  // no detector: charged to the crash
      ev(1010, "fault", "nan", 7, 0, 0.5), ev(1020, "finish", "", 8, 0, 0),
  };
  const auto g = compute_goodput(events, steps);
  EXPECT_DOUBLE_EQ(g.wall_s, 20.0);
  EXPECT_DOUBLE_EQ(g.recomputed_s, 2.0);  // first records of steps 5 and 6
  EXPECT_DOUBLE_EQ(g.skipped_s, 1.0);
  EXPECT_DOUBLE_EQ(g.productive_s, 7.0);  // steps 1,2,4,5,6,7,8 as last recorded
  EXPECT_EQ(g.steps_recomputed, 2);
  ASSERT_EQ(g.lost_by_kind.size(), 2u);
  EXPECT_DOUBLE_EQ(g.lost_by_kind.at("crash"), 3.0);
  EXPECT_DOUBLE_EQ(g.lost_by_kind.at("nan"), 0.5);
  EXPECT_EQ(g.faults_by_kind.at("crash"), 1);
  EXPECT_EQ(g.faults_by_kind.at("nan"), 1);
  EXPECT_DOUBLE_EQ(g.ratio, 7.0 / 20.0);
  const std::string text = keel::resilience::format_goodput(g);
  EXPECT_NE(text.find("crash"), std::string::npos);
  EXPECT_NE(text.find("effective-training-time ratio 0.3500"), std::string::npos);
}

TEST(Goodput, WallTimeNeverBelowRecordedSteps) {
  // Events a second apart but ten seconds of steps: the events missed time.
  std::vector<GoodputStep> steps(10, GoodputStep{0, 1.0, false});
  for (int i = 0; i < 10; ++i) steps[i].step = i + 1;
  const auto g =
      compute_goodput({ev(5, "start", "", 0, 0, 0), ev(6, "finish", "", 10, 0, 0)}, steps);
  EXPECT_DOUBLE_EQ(g.wall_s, 10.0);
  EXPECT_DOUBLE_EQ(g.ratio, 1.0);
}

TEST(Goodput, ParsesTheSchemaAndKeepsUnknownFieldsOut) {
  const auto e = parse_goodput_event(
      R"({"time": 1700000000.5, "event": "fault", "detector": "hang", "rank": 1, "step": 42,
          "steps_lost": 3, "time_lost_s": 12.5, "world_size": 2, "detail": "no heartbeat", "extra": [1]})",
      "events.jsonl:1");
  EXPECT_DOUBLE_EQ(e.time, 1700000000.5);
  EXPECT_EQ(e.event, "fault");
  EXPECT_EQ(e.detector, "hang");
  EXPECT_EQ(e.rank, 1);
  EXPECT_EQ(e.step, 42);
  EXPECT_EQ(e.steps_lost, 3);
  EXPECT_DOUBLE_EQ(e.time_lost_s, 12.5);
  EXPECT_EQ(e.world_size, 2);
  EXPECT_EQ(e.detail, "no heartbeat");
}

TEST(Goodput, BadLinesNameTheLineAndField) {
  try {
    parse_goodput_event(R"({"event": "fault", "rank": "zero"})", "run/events.jsonl:7");
    FAIL() << "no error";
  } catch (const keel::IoError& e) {
    EXPECT_NE(std::string(e.what()).find("run/events.jsonl:7: field 'rank'"), std::string::npos)
        << e.what();
  }
  try {
    parse_goodput_event(R"({"event": "fault", "step": 3.5})", "x:2");
    FAIL() << "no error";
  } catch (const keel::IoError& e) {
    EXPECT_NE(std::string(e.what()).find("x:2: field 'step': expected an integer"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(parse_goodput_event(R"({"time": 1, "ev)", "x:3"), keel::IoError);
  EXPECT_THROW(parse_goodput_event(R"([1, 2])", "x:4"), keel::IoError);
  EXPECT_THROW(parse_goodput_event(R"({"time": 1})", "x:5"), keel::IoError);  // no event
}

TEST(Goodput, CountsResumesBySource) {
  auto res = [](double t, const char* source) {
    return parse_goodput_event(
        fmt::format(R"({{"time":{},"event":"resume","step":4,"source":"{}"}})", t, source), "t");
  };
  const auto g = compute_goodput({res(1, "snapshot"), res(2, "snapshot"), res(3, "disk")}, {});
  EXPECT_EQ(g.resumes_by_source.at("snapshot"), 2);
  EXPECT_EQ(g.resumes_by_source.at("disk"), 1);
  EXPECT_NE(keel::resilience::format_goodput(g).find("from memory snapshots 2, from disk 1"),
            std::string::npos);
}
