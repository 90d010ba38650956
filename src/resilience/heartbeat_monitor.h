// The supervisor's side of the heartbeat (heartbeat.h): receives the ranks'
// beats and judges the world they belong to. A rank is dead when its process
// is gone (checked through /proc for ranks on this host) or when no beat came
// for dead_after_s; hung when it beats but its progress has not moved for
// max(hang_floor_s, hang_factor x the median step) while a step is running.
// It also tracks warm spare worlds: ready when every rank waits, released
// with one datagram per rank.
#pragma once
#include <sys/socket.h>
#include <sys/types.h>

#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "resilience/heartbeat.h"

namespace keel::resilience {

struct HeartbeatOptions {
  double dead_after_s = 0.4;  // no beat for this long: dead (4 beats lost)
  double hang_factor = 3.0;   // progress stalled for this many median steps: hung
  double hang_floor_s = 1.0;  // ... but never less than this (scheduling noise)
  int64_t min_steps = 3;      // steps timed before a hang can be judged
};

struct HeartbeatVerdict {
  std::string detector;  // "crash" or "hang"
  int rank = -1;         // -1: no single rank to blame
  int64_t step = 0;
  std::string detail;
  bool process_gone = false;  // the rank's process no longer exists
};

class HeartbeatMonitor {
 public:
  // Listens on a UDP port of loopback, or of every interface when
  // `all_interfaces` (ranks on other hosts). IoError when it cannot.
  HeartbeatMonitor(HeartbeatOptions opt, bool all_interfaces);
  ~HeartbeatMonitor();
  HeartbeatMonitor(const HeartbeatMonitor&) = delete;
  HeartbeatMonitor& operator=(const HeartbeatMonitor&) = delete;

  // "host:port" for KEEL_HEARTBEAT.
  const std::string& address() const { return address_; }
  int fd() const { return fd_; }

  // Reads every beat waiting on the socket (non-blocking).
  void receive(double now);
  // Judges world `world_id` of `world_size` ranks at time `now`; nothing
  // while some rank has not beaten yet or once a rank said it is exiting.
  std::optional<HeartbeatVerdict> judge(uint64_t world_id, int world_size, double now);
  // Whether every rank of spare world `world_id` beats and waits.
  bool spare_ready(uint64_t world_id, int world_size) const;
  // A stopped (SIGSTOP) child process of `parent` (mpirun: its ranks on this
  // host, whether or not they beat yet): a spare that will never get ready
  // (empty: none).
  static std::optional<pid_t> stopped_child(pid_t parent);
  // Sends the release to every rank of spare world `world_id`.
  void release(uint64_t world_id);
  // Pids of the ranks of `world_id` that run on this host.
  std::vector<pid_t> local_pids(uint64_t world_id) const;
  // Highest step any rank of `world_id` finished (0 before the first).
  int64_t steps_done(uint64_t world_id) const;
  // Median step seconds of `world_id` so far (0 before any).
  double median_step_s(uint64_t world_id) const;
  // Whether a rank of `world_id` said it leaves on purpose (finished, or an
  // error or rollback it reported): its world's exit status then counts.
  bool exiting(uint64_t world_id) const;
  // Drops what is known of `world_id` (it ended).
  void forget(uint64_t world_id);

 private:
  struct Rank {
    Beat last;
    sockaddr_storage from{};
    socklen_t from_len = 0;
    double last_beat = 0, progress_since = 0, step_began = -1;
    bool local = false;
  };
  struct World {
    std::map<int, Rank> ranks;
    std::deque<double> step_s;  // recent step durations (rank 0's, else the lowest rank's)
    bool exiting = false;
  };

  HeartbeatOptions opt_;
  int fd_ = -1;
  std::string address_, host_;
  std::map<uint64_t, World> worlds_;
};

// Whether process `pid` on this host still runs (a zombie does not).
bool process_alive(pid_t pid);
// Its state letter from /proc/<pid>/stat ('R', 'S', 'T', 'Z', ...), '?' when gone.
char process_state(pid_t pid);

}  // namespace keel::resilience
