// The heartbeat between the ranks of a world and the supervisor of `keel
// launch`: every rank sends a small UDP datagram every 100 ms with its pid,
// host and progress (step and phase), so the supervisor sees a dead rank
// (its process gone, or no beat) within a fraction of a second and a hung one
// (beats, but no progress) within a few step times, without waiting for
// mpirun's own teardown. A rank of a warm spare world beats too, and waits
// for the supervisor's release before it resumes. Without KEEL_HEARTBEAT in
// the environment (a plain `keel train`) nothing is sent.
#pragma once
#include <sys/socket.h>
#include <sys/types.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

namespace keel::resilience {

// Environment the supervisor gives every rank of a world.
inline constexpr const char* kHeartbeatEnv = "KEEL_HEARTBEAT";  // "host:port" of the supervisor
inline constexpr const char* kWorldIdEnv = "KEEL_WORLD_ID";     // which world this rank belongs to
inline constexpr const char* kSpareEnv = "KEEL_SPARE";          // "1": wait for a release
inline constexpr const char* kSupervisorPidEnv = "KEEL_SUPERVISOR_PID";

inline constexpr double kBeatInterval_s = 0.1;

// Where a rank is within a step, published as step * 8 + phase (beats and
// <run>/progress/rank-N). Hang blame names the rank behind every other, so
// each point where a rank starts to wait on the others comes after a phase
// of its own: a rank stuck before it is then behind the ranks waiting there.
enum StepPhase : int {
  kPhaseBegan = 1,       // the step began
  kPhaseComputed = 2,    // forward and backward done; next, the snapshot copy
  kPhaseExchanging = 3,  // entering the gradient exchange
  kPhaseExchanged = 4,   // the gradients are exchanged
  kPhaseEnded = 5,       // the step ended (also: the step a world starts after)
};

// One datagram, rank -> supervisor. Fixed layout, host byte order (both ends
// run the same binary).
struct Beat {
  static constexpr uint32_t kMagic = 0x4b48424e;  // "KHBN"
  static constexpr uint32_t kVersion = 1;
  enum Flags : uint32_t {
    kPaused = 1,        // checkpoint, evaluation or start-up: no step is timed
    kSpareWaiting = 2,  // a warm spare rank waiting for its release
    kReleased = 4,      // a spare rank that saw its release
    kExiting = 8,       // the rank leaves on purpose (finished, an error it reported)
    kTerminated = 16,   // SIGTERM ends it: somebody else's decision, not its crash
  };
  uint32_t magic = kMagic;
  uint32_t version = kVersion;
  uint64_t world_id = 0;
  int32_t rank = -1;
  int32_t pid = 0;
  int64_t progress = -1;  // step * 8 + phase (resilience_guard.h), -1 before the first step
  uint32_t flags = kPaused;
  uint16_t reply_port = 0;  // where the supervisor sends a release (spares)
  uint16_t reserved = 0;
  char host[64] = {};
};

// Supervisor -> spare rank: "resume now".
struct Release {
  static constexpr uint32_t kMagic = 0x4b52454c;  // "KREL"
  uint32_t magic = kMagic;
  uint32_t reserved = 0;
  uint64_t world_id = 0;
};

class HeartbeatSender {
 public:
  // Starts beating to `target` ("host:port"). IoError when the address does
  // not resolve or no socket can be opened.
  HeartbeatSender(const std::string& target, uint64_t world_id, int rank, bool spare,
                  pid_t supervisor_pid);
  ~HeartbeatSender();
  HeartbeatSender(const HeartbeatSender&) = delete;
  HeartbeatSender& operator=(const HeartbeatSender&) = delete;

  // Published with the next beat (and at once: a change is sent right away).
  void progress(int64_t step, int phase);
  void pause();   // a checkpoint, evaluation: the step clock stops
  void resume();  // a step begins
  // The process is about to end on purpose (sent from exit()): its end is
  // not a crash.
  void exiting();
  // Blocks until the supervisor releases this spare world (returns at once
  // for a rank of a normal world). Exits the process with an error when the
  // supervisor is gone: a spare nobody will release must not linger.
  void wait_until_released();

 private:
  friend void heartbeat_terminating() noexcept;
  void run();
  void send_now(uint32_t extra_flags = 0) noexcept;

  int fd_ = -1;
  sockaddr_storage target_{};
  socklen_t target_len_ = 0;
  uint16_t reply_port_ = 0;  // this socket's port, named in every beat
  uint64_t world_id_;
  int rank_;
  pid_t supervisor_pid_;
  std::atomic<int64_t> progress_{-1};
  std::atomic<uint32_t> flags_{Beat::kPaused};
  char host_buf_[64] = {};
  std::mutex mu_;
  std::condition_variable cv_;
  bool released_ = false, stop_ = false;
  std::thread thread_;
};

// From the SIGTERM handler (async-signal-safe): tells the supervisor that
// this rank ends because it was told to, so it is not blamed for the crash.
void heartbeat_terminating() noexcept;

// The process's sender, started from the environment the supervisor sets
// (KEEL_HEARTBEAT, KEEL_WORLD_ID, KEEL_SPARE); nullptr when there is none.
// The first call with rank >= 0 starts it; later calls return it.
HeartbeatSender* rank_heartbeat(int rank = -1);

}  // namespace keel::resilience
