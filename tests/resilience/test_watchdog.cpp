// Hang watchdog: the timeout rule (startup value, then max(floor, factor x
// median)), and in a child process: a step that overruns ends the process
// with kExitHang after the expiry callback ran; steps that end in time and a
// paused watchdog never fire.
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include "resilience/exit_codes.h"
#include "resilience/hang_watchdog.h"

using namespace keel::resilience;

namespace {

// Runs body in a forked child; returns its wait status.
int in_child(const std::function<void()>& body) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    body();
    ::_exit(0);
  }
  int st = 0;
  ::waitpid(pid, &st, 0);
  return st;
}

}  // namespace

TEST(HangWatchdog, TimeoutRule) {
  HangWatchdogOptions o;
  o.floor_s = 2;
  o.factor = 10;
  o.startup_s = 100;
  o.min_samples = 3;
  o.window = 4;
  HangWatchdog w(o, nullptr);
  EXPECT_DOUBLE_EQ(w.current_timeout(), 100);
  w.end_step(0.5);
  w.end_step(0.7);
  EXPECT_DOUBLE_EQ(w.current_timeout(), 100);  // still fewer than min_samples
  w.end_step(0.6);
  EXPECT_DOUBLE_EQ(w.current_timeout(), 6.0);  // 10 x median(0.5, 0.7, 0.6)
  for (int i = 0; i < 4; ++i) w.end_step(0.01);
  EXPECT_DOUBLE_EQ(w.current_timeout(), 2.0);  // floor; old samples left the window
  o.startup_s = 1;
  HangWatchdog v(o, nullptr);
  EXPECT_DOUBLE_EQ(v.current_timeout(), 2.0);  // startup never below the floor
}

TEST(HangWatchdog, OverrunAbortsWithHangCode) {
  const std::string marker =
      (std::filesystem::temp_directory_path() / ("keel_wd_" + std::to_string(::getpid()))).string();
  std::filesystem::remove(marker);
  const int st = in_child([&] {
    HangWatchdogOptions o;
    o.floor_s = 0.2;
    o.startup_s = 0.2;
    HangWatchdog w(o, [&](int64_t step, double waited, double timeout) {
      std::ofstream(marker) << step << " " << (waited >= timeout ? "late" : "early");
    });
    w.begin_step(42);
    std::this_thread::sleep_for(std::chrono::seconds(30));  // the hang
  });
  ASSERT_TRUE(WIFEXITED(st));
  EXPECT_EQ(WEXITSTATUS(st), kExitHang);
  std::ifstream in(marker);
  std::string got;
  std::getline(in, got);
  EXPECT_EQ(got, "42 late");
  std::filesystem::remove(marker);
}

TEST(HangWatchdog, StepsInTimeAndPausesNeverFire) {
  const int st = in_child([] {
    HangWatchdogOptions o;
    o.floor_s = 0.3;
    o.startup_s = 0.3;
    HangWatchdog w(o, [](int64_t, double, double) { ::_exit(3); });
    for (int s = 1; s <= 5; ++s) {
      w.begin_step(s);
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      w.end_step(0.02);
    }
    w.begin_step(6);
    w.pause();  // e.g. a checkpoint write: not watched
    std::this_thread::sleep_for(std::chrono::milliseconds(700));
  });
  ASSERT_TRUE(WIFEXITED(st));
  EXPECT_EQ(WEXITSTATUS(st), 0);
}
