// The heartbeat's verdicts with real processes and real UDP datagrams: a
// child that dies without a word is a crash blamed on its rank, one ended by
// SIGTERM (mpirun tearing a world down) or by exit() is not, a stopped one is
// a hang, a world whose progress stalls past max(floor, 3 x median step) is
// a hang blamed on the rank behind, and a spare world is ready only when all
// of its ranks wait, and resumes when released.
#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <thread>

#include "resilience/heartbeat.h"
#include "resilience/heartbeat_monitor.h"

using namespace keel::resilience;

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Receives and judges until a verdict or `limit_s`; returns it and its delay.
std::optional<HeartbeatVerdict> judge_for(HeartbeatMonitor& m, uint64_t world, int n,
                                          double limit_s, double* waited = nullptr) {
  const double t0 = now_s();
  while (now_s() - t0 < limit_s) {
    m.receive(now_s());
    if (auto v = m.judge(world, n, now_s())) {
      if (waited) *waited = now_s() - t0;
      return v;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return std::nullopt;
}

// A rank in a child process, set up from the environment as under `keel
// launch`: beats for world 7 as `rank`, steps every 20 ms until `stop_after`
// steps, then ends as `end` says: 'k' SIGKILL, 't' SIGTERM, 'x' exit(0),
// 's' waits to be killed.
pid_t child_rank(const HeartbeatMonitor& m, int rank, int stop_after, char end) {
  const pid_t pid = ::fork();
  if (pid != 0) return pid;
  ::setenv(kHeartbeatEnv, m.address().c_str(), 1);
  ::setenv(kWorldIdEnv, "7", 1);
  ::setenv(kSpareEnv, "0", 1);
  HeartbeatSender* s = rank_heartbeat(rank);
  for (int step = 1; step <= stop_after; ++step) {
    s->resume();
    s->progress(step, kPhaseBegan);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    s->progress(step, kPhaseEnded);
    s->pause();
  }
  if (end == 'x') std::exit(0);
  if (end == 'k') ::kill(::getpid(), SIGKILL);
  if (end == 't') ::kill(::getpid(), SIGTERM);
  for (;;) ::pause();
}

}  // namespace

TEST(Heartbeat, RankGoneWithoutAWordIsACrashBlamedOnIt) {
  HeartbeatMonitor m({}, false);
  const pid_t a = child_rank(m, 0, 1000, 's');
  const pid_t b = child_rank(m, 1, 5, 'k');
  double waited = 0;
  const auto v = judge_for(m, 7, 2, 10.0, &waited);
  ASSERT_TRUE(v);
  EXPECT_EQ(v->detector, "crash");
  EXPECT_EQ(v->rank, 1);
  EXPECT_TRUE(v->process_gone);
  EXPECT_EQ(v->step, 5);
  ::kill(a, SIGKILL);
  ::waitpid(a, nullptr, 0);
  ::waitpid(b, nullptr, 0);
}

TEST(Heartbeat, RankThatExitsOnPurposeOrOnRequestIsNoCrash) {
  HeartbeatMonitor m({}, false);
  const pid_t a = child_rank(m, 0, 3, 'x');
  int st = 0;
  ::waitpid(a, &st, 0);
  EXPECT_TRUE(WIFEXITED(st));
  EXPECT_FALSE(judge_for(m, 7, 1, 1.0));
  // SIGTERM is mpirun ending a failed world: the rank says so as it goes.
  HeartbeatMonitor m2({}, false);
  const pid_t b = child_rank(m2, 0, 3, 't');
  ::waitpid(b, &st, 0);
  EXPECT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM);
  EXPECT_FALSE(judge_for(m2, 7, 1, 1.0));
}

TEST(Heartbeat, StoppedRankIsAHang) {
  HeartbeatOptions o;
  o.dead_after_s = 0.3;
  HeartbeatMonitor m(o, false);
  const pid_t a = child_rank(m, 0, 1000, 's');
  // Wait for its first beats, then freeze it whole (its beating thread too).
  for (int i = 0; i < 200 && m.local_pids(7).empty(); ++i) {
    m.receive(now_s());
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(m.local_pids(7).size(), 1u);
  ::kill(a, SIGSTOP);
  double waited = 0;
  const auto v = judge_for(m, 7, 1, 5.0, &waited);
  ASSERT_TRUE(v);
  EXPECT_EQ(v->detector, "hang");
  EXPECT_EQ(v->rank, 0);
  EXPECT_GE(waited, 0.25);
  EXPECT_LT(waited, 1.5);
  ::kill(a, SIGKILL);
  ::waitpid(a, nullptr, 0);
}

TEST(Heartbeat, StalledProgressIsAHangBlamedOnTheRankBehind) {
  HeartbeatOptions o;
  o.hang_floor_s = 0.2;
  o.hang_factor = 3;
  HeartbeatMonitor m(o, false);
  HeartbeatSender r0(m.address(), 9, 0, false, 0), r1(m.address(), 9, 1, false, 0);
  for (int step = 1; step <= 6; ++step) {
    r0.resume();
    r1.resume();
    r0.progress(step, kPhaseBegan);
    r1.progress(step, kPhaseBegan);
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    m.receive(now_s());
    r0.progress(step, kPhaseEnded);
    r1.progress(step, kPhaseEnded);
    r0.pause();
    r1.pause();
    m.receive(now_s());
  }
  // Step 7: rank 1 reaches the exchange, rank 0 never does.
  r0.resume();
  r1.resume();
  r0.progress(7, kPhaseBegan);
  r1.progress(7, kPhaseBegan);
  r1.progress(7, kPhaseExchanging);
  double waited = 0;
  const auto v = judge_for(m, 9, 2, 5.0, &waited);
  ASSERT_TRUE(v);
  EXPECT_EQ(v->detector, "hang");
  EXPECT_EQ(v->rank, 0) << v->detail;
  EXPECT_EQ(v->step, 7);
  // The floor (0.2 s) is above 3 x the ~30 ms median step.
  EXPECT_GE(waited, 0.15);
  EXPECT_LT(waited, 1.5);
  // Paused ranks (a checkpoint) are never hung.
  HeartbeatMonitor m2(o, false);
  HeartbeatSender p(m2.address(), 3, 0, false, 0);
  p.pause();
  EXPECT_FALSE(judge_for(m2, 3, 1, 0.6));
}

TEST(Heartbeat, SpareIsReadyWhenAllRanksWaitAndResumesOnRelease) {
  HeartbeatMonitor m({}, false);
  HeartbeatSender s0(m.address(), 11, 0, true, ::getpid());
  for (int i = 0; i < 50; ++i) {
    m.receive(now_s());
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_FALSE(m.spare_ready(11, 2)) << "one of two ranks waits";
  HeartbeatSender s1(m.address(), 11, 1, true, ::getpid());
  for (int i = 0; i < 50 && !m.spare_ready(11, 2); ++i) {
    m.receive(now_s());
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(m.spare_ready(11, 2));
  std::atomic<int> released{0};
  std::thread w0([&] {
    s0.wait_until_released();
    ++released;
  });
  std::thread w1([&] {
    s1.wait_until_released();
    ++released;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(released.load(), 0);
  m.release(11);
  w0.join();
  w1.join();
  EXPECT_EQ(released.load(), 2);
  // A normal world's rank never waits.
  HeartbeatSender n(m.address(), 12, 0, false, 0);
  n.wait_until_released();
}

// A spare whose rank was stopped before its first beat never gets ready:
// the supervisor finds it among mpirun's children instead of waiting.
TEST(Heartbeat, StoppedChildIsFoundAmongTheParentsChildren) {
  EXPECT_FALSE(HeartbeatMonitor::stopped_child(::getpid()).has_value());
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    for (;;) ::pause();
  }
  ASSERT_EQ(::kill(child, SIGSTOP), 0);
  std::optional<pid_t> found;
  for (int i = 0; i < 200 && !found; ++i) {  // the stop takes effect asynchronously
    found = HeartbeatMonitor::stopped_child(::getpid());
    if (!found) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(found, std::optional<pid_t>(child));
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  EXPECT_FALSE(HeartbeatMonitor::stopped_child(::getpid()).has_value());
}
