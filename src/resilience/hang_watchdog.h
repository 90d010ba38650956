// Hang watchdog: a thread in every rank that watches the current step (and the
// collectives inside it). When a step runs longer than
//   timeout = max(floor_s, factor * median of the recent step times)
// (startup_s until enough steps are timed) it logs, reports, and aborts the
// whole world, so the supervisor restarts it instead of everyone waiting
// forever on a peer that will never answer.
#pragma once
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace keel::resilience {

struct HangWatchdogOptions {
  double floor_s = 30.0;     // never time out a step faster than this
  double factor = 10.0;      // multiple of the median recent step time
  double startup_s = 300.0;  // timeout while fewer than min_samples steps are timed
  int64_t min_samples = 5;
  int64_t window = 50;  // recent step times kept for the median
};

// The rank whose published progress (step * 8 + phase, -1 unknown) is alone
// lowest: the one the others wait for. -1 when several share the lowest
// value: ranks that all wait in the same place say nothing about which of
// them stopped.
int rank_behind(const std::vector<int64_t>& progress);

class HangWatchdog {
 public:
  // on_expire(step, waited_s, timeout_s) runs on the watchdog thread when a
  // step overruns; it must not return (it aborts the world). If it does
  // return, the process exits with kExitHang.
  using ExpireFn = std::function<void(int64_t step, double waited_s, double timeout_s)>;

  HangWatchdog(HangWatchdogOptions opt, ExpireFn on_expire);
  ~HangWatchdog();
  HangWatchdog(const HangWatchdog&) = delete;
  HangWatchdog& operator=(const HangWatchdog&) = delete;

  // Starts watching `step` (1-based) with the current timeout.
  void begin_step(int64_t step);
  // The step ended after `seconds`; its time joins the median.
  void end_step(double seconds);
  // Stops watching without timing anything (checkpoint writes, evaluation).
  void pause();
  // The timeout the next step gets.
  double current_timeout() const;

 private:
  void run();
  double timeout_locked() const;

  HangWatchdogOptions opt_;
  ExpireFn on_expire_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<double> times_;
  bool armed_ = false;
  bool stop_ = false;
  int64_t step_ = 0;
  double timeout_s_ = 0;
  std::chrono::steady_clock::time_point started_;
  std::thread thread_;
};

}  // namespace keel::resilience
