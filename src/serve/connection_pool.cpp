#include "serve/connection_pool.h"

#include <algorithm>

#include "core/log.h"

namespace keel::serve {

ConnectionPool::ConnectionPool(size_t threads, size_t max_connections)
    : max_(std::max<size_t>(1, std::max(threads, max_connections))) {
  std::lock_guard<std::mutex> lk(mu_);
  for (size_t i = 0; i < std::max<size_t>(1, threads); ++i) start_worker();
}

ConnectionPool::~ConnectionPool() {
  shutdown();
}

void ConnectionPool::start_worker() {
  ++idle_;  // counted idle from the start, so a burst does not over-spawn
  threads_.emplace_back([this] { work(); });
}

void ConnectionPool::enqueue(std::function<void()> fn) {
  std::lock_guard<std::mutex> lk(mu_);
  if (stop_) return;
  jobs_.push_back(std::move(fn));
  if (idle_ < jobs_.size() && threads_.size() < max_) {
    start_worker();
    if (threads_.size() == max_)
      log().warn(
          "keel serve: {} connection threads, the limit (--max-connections): further "
          "connections wait for a free one",
          max_);
  }
  cv_.notify_one();
}

void ConnectionPool::work() {
  for (;;) {
    std::function<void()> fn;
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [this] { return stop_ || !jobs_.empty(); });
      if (jobs_.empty()) return;  // stopping, nothing left
      fn = std::move(jobs_.front());
      jobs_.pop_front();
      --idle_;
    }
    fn();
    std::lock_guard<std::mutex> lk(mu_);
    ++idle_;
  }
}

void ConnectionPool::shutdown() {
  std::vector<std::thread> ts;
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
    ts.swap(threads_);
  }
  cv_.notify_all();
  for (auto& t : ts)
    if (t.joinable()) t.join();
}

size_t ConnectionPool::workers() const {
  std::lock_guard<std::mutex> lk(mu_);
  return threads_.size();
}

}  // namespace keel::serve
