#include "resilience/async_checkpointer.h"

#include <chrono>

#include "core/log.h"

namespace keel::resilience {

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
  join();
  if (error_) {
    auto e = error_;
    error_ = nullptr;
    std::rethrow_exception(e);
  }
}

double AsyncCheckpointer::save(const std::function<void(CheckpointState&)>& fill) {
  const auto t0 = std::chrono::steady_clock::now();
  wait();
  fill(buffer_);
  auto write = [this] {
    try {
      WrittenCheckpoint w = write_checkpoint(root_, buffer_, opt_);
      if (on_written_) on_written_(w);
      pending_ = w;
    } catch (...) {
      error_ = std::current_exception();
    }
  };
  double stall = 0;
  if (async_) {
    stall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    worker_ = std::thread(write);
  } else {
    write();
    stall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    wait();
  }
  return stall;
}

}  // namespace keel::resilience
