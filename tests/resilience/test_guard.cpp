// ResilienceGuard as the run loop drives it: a lone NaN only skips, a repeat
// rolls back; an injected loss spike rolls back and the next world skips
// that step's batches; replicas that disagree roll back with the odd rank
// named; the detector state survives a checkpoint round trip.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <memory>

#include "core/error.h"
#include "core/tensor.h"
#include "resilience/exit_codes.h"
#include "resilience/resilience_guard.h"

using namespace keel;
using namespace keel::resilience;
namespace fs = std::filesystem;

namespace {

struct Aborted {
  int code;
};

std::string fresh_dir(const std::string& name) {
  const auto d = fs::temp_directory_path() / ("keel_guard_" + std::to_string(::getpid())) / name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d.string();
}

struct Fixture {
  std::unique_ptr<nn::Parameter> p = std::make_unique<nn::Parameter>();
  std::vector<nn::Parameter*> params;
  Fixture() {
    p->name = "w";
    p->value = Tensor::zeros({8}, DType::F32);
    p->grad = Tensor::zeros({8}, DType::F32);
    params = {p.get()};
  }
};

GuardOptions quiet_options() {
  GuardOptions o;
  o.hang = false;  // no thread in these tests
  o.spike.min_history = 5;
  o.sdc_every = 5;
  return o;
}

train::StepMetrics metrics(int64_t step, double loss) {
  train::StepMetrics m;
  m.step = step;
  m.loss = loss;
  m.grad_norm = std::isfinite(loss) ? 1.0 : loss;
  m.skipped = !std::isfinite(loss);
  return m;
}

std::vector<std::string> names(const std::vector<Event>& ev) {
  std::vector<std::string> out;
  for (const auto& e : ev) out.push_back(e.event + (e.detector.empty() ? "" : ":" + e.detector));
  return out;
}

ResilienceGuard::AbortFn thrower() {
  return [](int code) { throw Aborted{code}; };
}

}  // namespace

TEST(Guard, LoneNanSkipsRepeatRollsBack) {
  const std::string run = fresh_dir("nan");
  Fixture f;
  ResilienceGuard g(quiet_options(), run, 0, 1, f.params, nullptr, thrower());
  g.started_at(0);
  g.end_step(metrics(1, 3.0));
  g.end_step(metrics(2, NAN));
  g.end_step(metrics(3, 3.0));
  g.after_checkpoint(3, run);
  try {
    g.end_step(metrics(4, INFINITY));
    FAIL() << "no rollback";
  } catch (const Aborted& a) {
    EXPECT_EQ(a.code, kExitRollback);
  }
  const auto ev = read_events(run + "/events.jsonl");
  EXPECT_EQ(names(ev), (std::vector<std::string>{"fault:nan", "fault:nan", "rollback:nan"}));
  EXPECT_EQ(ev[2].step, 3);
  EXPECT_EQ(ev[2].steps_lost, 1);
}

TEST(Guard, InjectedSpikeRollsBackAndNextWorldSkips) {
  const std::string run = fresh_dir("spike");
  Fixture f;
  GuardOptions o = quiet_options();
  o.faults = "kind=loss_spike,step=9,magnitude=3";
  {
    ResilienceGuard g(o, run, 0, 1, f.params, nullptr, thrower());
    g.started_at(0);
    for (int s = 1; s <= 8; ++s) g.end_step(metrics(s, 4.0 - 0.01 * s));
    EXPECT_THROW(g.end_step(metrics(9, 3.9)), Aborted);
  }
  const auto ev = read_events(run + "/events.jsonl");
  EXPECT_EQ(names(ev), (std::vector<std::string>{"inject", "skip_batches", "fault:loss_spike",
                                                 "rollback:loss_spike"}));
  EXPECT_EQ(ev[1].extra.at("steps"), nlohmann::json::array({9}));
  // The next world starts over from step 0 (no checkpoint) and skips step 9.
  ResilienceGuard g2(o, run, 0, 1, f.params, nullptr, thrower());
  EXPECT_FALSE(g2.skip_step(8));
  g2.started_at(0);
  EXPECT_TRUE(g2.skip_step(8));
  EXPECT_FALSE(g2.skip_step(9));
  for (int s = 1; s <= 8; ++s) g2.end_step(metrics(s, 4.0 - 0.01 * s));
  g2.end_step(metrics(10, 3.9));  // the injected spike fired already: no rollback
  EXPECT_EQ(g2.state()["skip_steps"], nlohmann::json::array({9}));
}

TEST(Guard, StateRoundTrip) {
  const std::string run = fresh_dir("state");
  Fixture f;
  GuardOptions o = quiet_options();
  o.skip_steps = {4, 7};
  ResilienceGuard a(o, run, 0, 1, f.params, nullptr, thrower());
  for (int s = 1; s <= 6; ++s) a.end_step(metrics(s, 5.0 + 0.1 * s));
  ResilienceGuard b(quiet_options(), run, 0, 1, f.params, nullptr, thrower());
  b.load_state(nlohmann::json::parse(a.state().dump()));
  EXPECT_EQ(b.state(), a.state());
  EXPECT_TRUE(b.skip_step(3));
  EXPECT_TRUE(b.skip_step(6));
  // Same window, same verdict: 7.0 is a spike for both.
  EXPECT_THROW(a.end_step(metrics(7, 7.0)), Aborted);
  EXPECT_THROW(b.end_step(metrics(7, 7.0)), Aborted);
}

TEST(Guard, ReplicaMismatchRollsBackNamingOddRank) {
  const std::string run = fresh_dir("sdc");
  Fixture f;
  GuardOptions o = quiet_options();
  o.loss_spike = false;
  int gathers = 0;
  // Rank 0 of three; rank 2 disagrees from the second check on.
  ResilienceGuard g(
      o, run, 0, 3, f.params,
      [&](uint64_t h) {
        // The second gather of a check carries each rank's own-state flag
        // (0 or 1); only the parameter hash gathers are counted and altered.
        if (h <= 1) return std::vector<uint64_t>{h, h, h};
        ++gathers;
        return std::vector<uint64_t>{h, h, gathers > 1 ? h + 1 : h};
      },
      thrower());
  g.started_at(0);
  for (int s = 1; s <= 5; ++s) g.end_step(metrics(s, 3.0));
  EXPECT_EQ(gathers, 1);
  g.before_checkpoint(5);  // already checked at this step
  EXPECT_EQ(gathers, 1);
  for (int s = 6; s <= 9; ++s) g.end_step(metrics(s, 3.0));
  try {
    g.end_step(metrics(10, 3.0));
    FAIL() << "no rollback";
  } catch (const Aborted& a) {
    EXPECT_EQ(a.code, kExitRollback);
  }
  const auto ev = read_events(run + "/events.jsonl");
  ASSERT_EQ(names(ev), (std::vector<std::string>{"fault:sdc", "rollback:sdc"}));
  EXPECT_EQ(ev[0].rank, 2);
  EXPECT_EQ(ev[0].world_size, 3);
}

TEST(Guard, SkipStepsOptionIsValidated) {
  io::Config cfg = io::default_config();
  io::apply_override(cfg, "resilience.skip_steps=3,9");
  EXPECT_EQ(guard_options(cfg).skip_steps, (std::vector<int64_t>{3, 9}));
  io::apply_override(cfg, "resilience.skip_steps=3,x");
  EXPECT_THROW(guard_options(cfg), ConfigError);
}
