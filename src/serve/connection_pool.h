// The threads that serve `keel serve`'s connections. Each accepted connection
// is a job that holds its thread until the connection closes, so a fixed pool
// lets a few hundred slow or idle clients (a partial request line each, read
// timeout 30 s) make a normal request wait behind them. This pool starts
// `threads` workers and adds one whenever a connection arrives with none
// idle, up to `max_connections`; only beyond that does a connection wait for
// a free worker.
#pragma once
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace keel::serve {

class ConnectionPool {
 public:
  ConnectionPool(size_t threads, size_t max_connections);
  ~ConnectionPool();
  ConnectionPool(const ConnectionPool&) = delete;
  ConnectionPool& operator=(const ConnectionPool&) = delete;

  // Queues a connection's job; dropped once shutdown has begun.
  void enqueue(std::function<void()> fn);
  // Runs the jobs already queued, then joins every worker.
  void shutdown();
  // Workers started so far (for tests and metrics).
  size_t workers() const;

 private:
  void start_worker();
  void work();

  const size_t max_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> jobs_;
  std::vector<std::thread> threads_;
  size_t idle_ = 0;
  bool stop_ = false;
};

}  // namespace keel::serve
