// Fault injector: each fault fires at its step and rank only, once per run
// even when a new world reads the events of the last one, every_start
// faults fire in every world, a NaN repeat covers its steps, a bit flip
// changes exactly one bit, a corrupted checkpoint differs in one byte, and a
// kill records its event before the process dies.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>

#include "core/error.h"
#include "core/tensor.h"
#include "io/atomic_file.h"
#include "resilience/fault_injector.h"

using namespace keel;
using namespace keel::resilience;
namespace fs = std::filesystem;

namespace {

std::string fresh_dir(const std::string& name) {
  const auto d = fs::temp_directory_path() / ("keel_inj_" + std::to_string(::getpid())) / name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d.string();
}

struct Params {
  std::vector<std::unique_ptr<nn::Parameter>> owned;
  std::vector<nn::Parameter*> ptrs;
  Params() {
    for (const char* n : {"wte.weight", "h.0.mlp.c_fc.weight"}) {
      auto p = std::make_unique<nn::Parameter>();
      p->name = n;
      p->value = Tensor::zeros({4, 8}, DType::F32);
      p->grad = Tensor::zeros({4, 8}, DType::F32);
      for (int64_t i = 0; i < 32; ++i) p->value.data<float>()[i] = 0.25f * float(i);
      ptrs.push_back(p.get());
      owned.push_back(std::move(p));
    }
  }
};

int differing_bits(const float* a, const float* b, int64_t n) {
  int bits = 0;
  for (int64_t i = 0; i < n; ++i) {
    uint32_t x, y;
    std::memcpy(&x, a + i, 4);
    std::memcpy(&y, b + i, 4);
    bits += __builtin_popcount(x ^ y);
  }
  return bits;
}

}  // namespace

TEST(FaultInjector, FiresOnceAcrossWorlds) {
  const std::string dir = fresh_dir("once");
  const std::string events = dir + "/events.jsonl";
  const FaultPlan plan = parse_fault_plan_entries(
      "kind=loss_spike,step=5,magnitude=3;kind=loss_spike,step=5,rank=1,magnitude=100;"
      "kind=loss_spike,step=7,magnitude=2,every_start=true");
  {
    EventsLog log(events);
    FaultInjector inj(plan, 0, 2, &log, fired_fault_ids(read_events(events)));
    EXPECT_EQ(inj.loss_offset(4), 0);
    EXPECT_EQ(inj.loss_offset(5), 3);  // rank 1's fault is not ours
    EXPECT_EQ(inj.loss_offset(5), 0);  // a replay of step 5 in the same world
    EXPECT_EQ(inj.loss_offset(7), 2);
  }
  // The next world of the same run: fault 0 fired already; fault 2 fires again.
  EventsLog log(events);
  FaultInjector inj(plan, 0, 2, &log, fired_fault_ids(read_events(events)));
  EXPECT_TRUE(inj.fired(0));
  EXPECT_EQ(inj.loss_offset(5), 0);
  EXPECT_EQ(inj.loss_offset(7), 2);
  const auto ev = read_events(events);
  ASSERT_EQ(ev.size(), 3u);
  EXPECT_EQ(ev[0].event, "inject");
  EXPECT_EQ(ev[0].step, 5);
  EXPECT_EQ(ev[0].extra.at("fault_id"), 0);
  EXPECT_EQ(ev[0].extra.at("kind"), "loss_spike");
  // Rank 1 of the same plan still has its own fault to fire.
  FaultInjector r1(plan, 1, 2, nullptr, fired_fault_ids(ev));
  EXPECT_EQ(r1.loss_offset(5), 100);
}

// A straggler at the snapshot sleeps there, not before its step; one before
// the step sleeps there only (what fired is read from the events, the
// sleeps are lower bounds).
TEST(FaultInjector, StragglerBeforeTheStepOrBeforeTheSnapshot) {
  const std::string dir = fresh_dir("straggler");
  const std::string events = dir + "/events.jsonl";
  EventsLog log(events);
  FaultInjector inj(parse_fault_plan_entries("kind=straggler,step=3,seconds=0.2,where=snapshot;"
                                             "kind=straggler,step=4,seconds=0.2"),
                    0, 1, &log);
  const auto timed = [](const std::function<void()>& f) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  inj.before_step(3);
  EXPECT_FALSE(inj.fired(0));
  EXPECT_GE(timed([&] { inj.before_snapshot(3); }), 0.2);
  EXPECT_TRUE(inj.fired(0));
  inj.before_snapshot(3);  // once
  EXPECT_GE(timed([&] { inj.before_step(4); }), 0.2);
  inj.before_snapshot(4);
  const auto ev = read_events(events);
  ASSERT_EQ(ev.size(), 2u);
  EXPECT_EQ(ev[0].step, 3);
  EXPECT_EQ(ev[0].extra.at("fault_id"), 0);
  EXPECT_NE(ev[0].detail.find("before the in-memory snapshot"), std::string::npos) << ev[0].detail;
  EXPECT_EQ(ev[1].step, 4);
  EXPECT_EQ(ev[1].extra.at("fault_id"), 1);
}

TEST(FaultInjector, NanRepeatAndBitFlips) {
  Params p;
  const FaultPlan plan = parse_fault_plan_entries(
      "kind=nan,step=3,repeat=2,param=h.0.mlp.c_fc.weight,index=5;"
      "kind=bitflip,step=4,param=wte.weight,index=9,bit=30;"
      "kind=bitflip,step=6,target=grad,index=33,bit=0");
  FaultInjector inj(plan, 0, 1, nullptr);
  inj.after_backward(2, p.ptrs);
  EXPECT_FALSE(std::isnan(p.ptrs[1]->grad.data<float>()[5]));
  inj.after_backward(3, p.ptrs);
  EXPECT_TRUE(std::isnan(p.ptrs[1]->grad.data<float>()[5]));
  p.ptrs[1]->grad.data<float>()[5] = 0;
  inj.after_backward(4, p.ptrs);
  EXPECT_TRUE(std::isnan(p.ptrs[1]->grad.data<float>()[5]));  // repeat = 2
  p.ptrs[1]->grad.data<float>()[5] = 0;
  inj.after_backward(5, p.ptrs);
  EXPECT_FALSE(std::isnan(p.ptrs[1]->grad.data<float>()[5]));

  Params ref;
  EXPECT_TRUE(inj.after_update(4, p.ptrs));
  EXPECT_EQ(differing_bits(p.ptrs[0]->value.data<float>(), ref.ptrs[0]->value.data<float>(), 32),
            1);
  EXPECT_NE(p.ptrs[0]->value.data<float>()[9], ref.ptrs[0]->value.data<float>()[9]);
  EXPECT_EQ(differing_bits(p.ptrs[1]->value.data<float>(), ref.ptrs[1]->value.data<float>(), 32),
            0);
  // Grad flip: index 33 wraps to element 1 of the first parameter.
  inj.after_backward(6, p.ptrs);
  uint32_t g;
  std::memcpy(&g, p.ptrs[0]->grad.data<float>() + 1, 4);
  EXPECT_EQ(g, 1u);
  EXPECT_FALSE(inj.after_update(6, p.ptrs));  // a grad flip does not touch parameters
  EXPECT_EQ(differing_bits(p.ptrs[0]->value.data<float>(), ref.ptrs[0]->value.data<float>(), 32),
            1);
  FaultInjector bad(parse_fault_plan_entries("kind=bitflip,step=1,param=nope"), 0, 1, nullptr);
  EXPECT_THROW(bad.after_update(1, p.ptrs), ConfigError);
}

TEST(FaultInjector, CorruptsLargestCheckpointFileByOneByte) {
  const std::string dir = fresh_dir("ckpt/step_00000010");
  std::string big(4096, 'x'), small(100, 'y');
  io::write_file_atomic(dir + "/params.safetensors", big);
  io::write_file_atomic(dir + "/manifest.json", small);
  FaultInjector inj(parse_fault_plan_entries("kind=corrupt_checkpoint,step=10"), 0, 1, nullptr);
  EXPECT_EQ(inj.after_checkpoint(5, dir), "");
  EXPECT_EQ(inj.after_checkpoint(10, dir), dir + "/params.safetensors");
  const std::string after = io::read_file_bytes(dir + "/params.safetensors");
  ASSERT_EQ(after.size(), big.size());
  int diff = 0;
  for (size_t i = 0; i < big.size(); ++i) diff += after[i] != big[i];
  EXPECT_EQ(diff, 1);
  EXPECT_EQ(io::read_file_bytes(dir + "/manifest.json"), small);
}

TEST(FaultInjector, KillRecordsThenDies) {
  const std::string dir = fresh_dir("kill");
  const std::string events = dir + "/events.jsonl";
  const pid_t pid = ::fork();
  if (pid == 0) {
    EventsLog log(events);
    FaultInjector inj(parse_fault_plan_entries("kind=kill,step=3,rank=1"), 1, 2, &log);
    inj.before_step(1);
    inj.before_step(2);
    inj.before_step(3);
    ::_exit(0);  // not reached
  }
  int st = 0;
  ::waitpid(pid, &st, 0);
  ASSERT_TRUE(WIFSIGNALED(st));
  EXPECT_EQ(WTERMSIG(st), SIGKILL);
  const auto ev = read_events(events);
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0].event, "inject");
  EXPECT_EQ(ev[0].rank, 1);
  EXPECT_EQ(ev[0].step, 3);
  // Rank 0 with the same plan is never killed.
  FaultInjector r0(parse_fault_plan_entries("kind=kill,step=3,rank=1"), 0, 2, nullptr);
  r0.before_step(3);
  SUCCEED();
}
