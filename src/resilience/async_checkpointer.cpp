#include "resilience/async_checkpointer.h"

#include <pthread.h>
#include <signal.h>
#include <time.h>

#include <atomic>
#include <chrono>
#include <mutex>

#include "core/log.h"
#include "resilience/heartbeat.h"

namespace keel::resilience {

namespace {
// Writes in flight in this process. When mpirun ends the world because
// another rank died, it sends SIGTERM (and SIGKILL only later): the handler
// lets a write in flight finish first, so a crash elsewhere does not cost
// the checkpoint being written (and with it up to another interval of steps).
std::atomic<int> g_writes_in_flight{0};

void drain_then_terminate(int sig) {
  // Async-signal-safe: a lock-free load and nanosleep only. Bounded, in case
  // the write itself cannot finish.
  heartbeat_terminating();
  for (int i = 0; i < 6000 && g_writes_in_flight.load() > 0; ++i) {
    timespec ts{0, 10'000'000};
    ::nanosleep(&ts, nullptr);
  }
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}
}  // namespace

void install_sigterm_drain_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction old {};
    if (::sigaction(SIGTERM, nullptr, &old) != 0 || old.sa_handler != SIG_DFL) return;
    struct sigaction sa {};
    sa.sa_handler = drain_then_terminate;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGTERM, &sa, nullptr);
  });
}

namespace {
// The thread that writes must not be the one the handler parks.
struct BlockTerm {
  sigset_t old;
  BlockTerm() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, &old);
  }
  ~BlockTerm() { pthread_sigmask(SIG_SETMASK, &old, nullptr); }
};
}  // namespace

AsyncCheckpointer::AsyncCheckpointer(std::string root, CheckpointWriteOptions opt, bool async,
                                     std::function<void(const WrittenCheckpoint&)> on_written)
    : root_(std::move(root)), opt_(opt), async_(async), on_written_(std::move(on_written)) {}

AsyncCheckpointer::~AsyncCheckpointer() {
  try {
    wait();
  } catch (const std::exception& e) {
    log().error("checkpoint write failed: {}", e.what());
  }
}

void AsyncCheckpointer::join() {
  if (worker_.joinable()) worker_.join();
  if (pending_) {
    last_ = pending_;
    pending_.reset();
  }
}

void AsyncCheckpointer::wait() {
  std::lock_guard<std::mutex> lk(mu_);
  wait_locked();
}

void AsyncCheckpointer::wait_locked() {
  join();
  if (error_) {
    auto e = error_;
    error_ = nullptr;
    std::rethrow_exception(e);
  }
}

double AsyncCheckpointer::save(const std::function<void(CheckpointState&)>& fill) {
  const auto t0 = std::chrono::steady_clock::now();
  std::lock_guard<std::mutex> lk(mu_);
  wait_locked();
  fill(buffer_);
  install_sigterm_drain_handler();
  ++g_writes_in_flight;
  auto write = [this] {
    try {
      WrittenCheckpoint w = write_checkpoint(root_, buffer_, opt_);
      if (on_written_) on_written_(w);
      pending_ = w;
    } catch (...) {
      error_ = std::current_exception();
    }
    --g_writes_in_flight;
  };
  double stall = 0;
  if (async_) {
    stall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    BlockTerm block;  // inherited by the writer thread
    worker_ = std::thread(write);
  } else {
    {
      BlockTerm block;
      write();
    }
    stall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    wait_locked();
  }
  return stall;
}

}  // namespace keel::resilience
