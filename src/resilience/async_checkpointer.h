// Asynchronous checkpointing: the training loop copies its state into a host
// snapshot buffer (the only part it waits for) and a background thread
// writes that buffer with write_checkpoint while training goes on. One
// buffer, one write in flight: a new save first waits for the previous write.
// A crash during a write leaves the previous checkpoint as `latest`.
#pragma once
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "resilience/checkpoint_state.h"
#include "resilience/checkpoint_writer.h"

namespace keel::resilience {

// Installs (once) the SIGTERM handler of a rank: a checkpoint write in flight
// finishes first (mpirun SIGTERMs the other ranks when one dies, SIGKILL
// comes only later), the supervisor hears that the rank was told to end,
// then the signal does what it would have done.
void install_sigterm_drain_handler();

class AsyncCheckpointer {
 public:
  // Writes under root. async false: save() writes before returning.
  // on_written runs after each finished write (on the writer thread).
  AsyncCheckpointer(std::string root, CheckpointWriteOptions opt, bool async,
                    std::function<void(const WrittenCheckpoint&)> on_written = {});
  // Waits for a write in flight; its error, if any, is logged (a destructor
  // cannot throw): call wait() first to see it.
  ~AsyncCheckpointer();
  AsyncCheckpointer(const AsyncCheckpointer&) = delete;
  AsyncCheckpointer& operator=(const AsyncCheckpointer&) = delete;

  // Waits for the previous write (rethrowing its error), then lets `fill`
  // copy the state into the snapshot buffer, then starts writing it. Returns
  // the seconds the caller was held (waiting + copying): the training stall.
  double save(const std::function<void(CheckpointState&)>& fill);
  // Waits for the write in flight; rethrows its error.
  void wait();
  // The last write that finished (after wait(): the newest).
  std::optional<WrittenCheckpoint> last_written() const { return last_; }
  const std::string& root() const { return root_; }

 private:
  void join();
  void wait_locked();

  std::string root_;
  CheckpointWriteOptions opt_;
  bool async_;
  std::function<void(const WrittenCheckpoint&)> on_written_;
  CheckpointState buffer_;
  // save() and wait() may race: the hang watchdog's thread drains the write
  // in flight while the training thread is (usually) stuck.
  std::mutex mu_;
  std::thread worker_;
  std::exception_ptr error_;
  std::optional<WrittenCheckpoint> pending_, last_;
};

}  // namespace keel::resilience
