#include "resilience/hang_watchdog.h"

#include <unistd.h>

#include <algorithm>
#include <vector>

#include "core/log.h"
#include "resilience/exit_codes.h"
#include "resilience/loss_spike_detector.h"

namespace keel::resilience {

int rank_behind(const std::vector<int64_t>& progress) {
  int blamed = -1;
  for (int r = 0; r < int(progress.size()); ++r)
    if (blamed < 0 || progress[size_t(r)] < progress[size_t(blamed)]) blamed = r;
  for (int r = 0; r < int(progress.size()); ++r)
    if (r != blamed && progress[size_t(r)] == progress[size_t(blamed)]) return -1;
  return blamed;
}

HangWatchdog::HangWatchdog(HangWatchdogOptions opt, ExpireFn on_expire)
    : opt_(opt), on_expire_(std::move(on_expire)) {
  thread_ = std::thread([this] { run(); });
}

HangWatchdog::~HangWatchdog() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

double HangWatchdog::timeout_locked() const {
  if (int64_t(times_.size()) < opt_.min_samples) return std::max(opt_.startup_s, opt_.floor_s);
  const double med = median_of(std::vector<double>(times_.begin(), times_.end()));
  return std::max(opt_.floor_s, opt_.factor * med);
}

double HangWatchdog::current_timeout() const {
  std::lock_guard<std::mutex> lk(mu_);
  return timeout_locked();
}

void HangWatchdog::begin_step(int64_t step) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    armed_ = true;
    step_ = step;
    timeout_s_ = timeout_locked();
    started_ = std::chrono::steady_clock::now();
  }
  cv_.notify_all();
}

void HangWatchdog::end_step(double seconds) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    armed_ = false;
    times_.push_back(seconds);
    while (int64_t(times_.size()) > opt_.window) times_.pop_front();
  }
  cv_.notify_all();
}

void HangWatchdog::pause() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    armed_ = false;
  }
  cv_.notify_all();
}

void HangWatchdog::run() {
  std::unique_lock<std::mutex> lk(mu_);
  while (!stop_) {
    if (!armed_) {
      cv_.wait(lk);
      continue;
    }
    const auto deadline =
        started_ + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                       std::chrono::duration<double>(timeout_s_));
    const int64_t step = step_;
    const auto started = started_;
    if (cv_.wait_until(lk, deadline) != std::cv_status::timeout) continue;
    // Still the same step, still armed, and past the deadline: a hang.
    if (!armed_ || stop_ || step_ != step || started_ != started) continue;
    const double waited =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    const double timeout = timeout_s_;
    lk.unlock();
    log().error("hang watchdog: step {} has run {:.1f}s, past its timeout {:.1f}s: aborting", step,
                waited, timeout);
    if (on_expire_) on_expire_(step, waited, timeout);
    ::_exit(kExitHang);
  }
}

}  // namespace keel::resilience
