// The supervisor behind `keel launch`: starts the world through mpirun,
// watches it, and when it dies (a rank crashed, was killed, or a detector
// aborted it) restarts it with backoff, up to a restart budget; the ranks
// resume by themselves from the newest verified checkpoint of the run
// directory. A rank blamed for `exclude_after` consecutive failures (with no
// newer checkpoint written in between) is excluded and the world shrinks,
// gradient accumulation growing so that the global batch (ranks x
// accumulation) stays the same. Every decision goes to <run>/events.jsonl.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "resilience/events_log.h"
#include "resilience/heartbeat_monitor.h"

namespace keel::resilience {

struct SupervisorOptions {
  int world_size = 1;
  std::vector<std::string> hosts;  // one rank per entry (mpirun --host); empty: this machine
  std::string hostfile;            // mpirun --hostfile (not shrunk on exclusion)
  std::string program;             // the program every rank runs (the keel binary)
  std::vector<std::string> args;   // its arguments ("train", "--config", ..., overrides)
  std::string run_dir;             // events.jsonl, metrics.jsonl, checkpoints/
  std::string checkpoint_dir;      // "": <run_dir>/checkpoints
  int64_t grad_accum = 1;          // per rank at world_size ranks
  std::string faults;              // passed to the ranks as resilience.faults
  int64_t restart_budget = 10;
  double backoff_s = 1.0, backoff_max_s = 30.0;
  int64_t exclude_after = 2;
  std::string mpirun = "mpirun";
  std::vector<std::string> mpirun_args;  // extra mpirun arguments
  // false: run the program directly as the only rank (no MPI; tests of the
  // supervisor itself, and machines without mpirun).
  bool use_mpirun = true;
  bool echo = true;  // copy the world's output to stdout
  // Judge the ranks by their heartbeats (heartbeat.h): a dead rank is seen
  // within dead_after_s and a hung one within hang_factor median steps, and
  // the world is ended at once (a checkpoint write in flight still
  // finishes) instead of after mpirun's own teardown. Off: mpirun alone.
  bool heartbeat = false;
  HeartbeatOptions heartbeat_opt;
  // Keep the next world started and waiting (processes, MPI, data, model
  // memory) once the current one trains, and release it when that one
  // fails, so a restart skips start-up. Needs heartbeat. Costs a second copy
  // of each rank's memory while it waits.
  bool warm_spare = false;
};

struct SupervisorResult {
  bool finished = false;  // the run reached its last step
  int64_t restarts = 0;
  int final_world = 0;
  int64_t final_grad_accum = 0;
  std::vector<int> excluded;  // ranks excluded, numbered in the world they were excluded from
  int64_t spares_used = 0;    // restarts that released a warm spare world
};

// What killed a world: the first fault event a rank wrote after the world
// started (hang, nan, loss_spike, sdc), else a crash blamed on the rank that
// mpirun names in its output (-1 when it names none).
struct WorldFailure {
  std::string detector;
  int rank = -1;
  int64_t step = 0;
  bool rank_wrote_fault = false;  // a rank recorded the fault event itself
  bool rank_wrote_rollback = false;
  std::string detail;
};

// The full command line of one world (exposed for tests). A restart drops
// --no-resume from the arguments so that the world resumes from this run's
// checkpoints.
std::vector<std::string> world_command(const SupervisorOptions& o, int world, int64_t grad_accum,
                                       const std::vector<std::string>& hosts, bool restart = false);
// Gradient accumulation that keeps world0 * accum0 sequences per step at
// `world` ranks; 0 when `world` does not divide it.
int64_t elastic_grad_accum(int world0, int64_t accum0, int world);
// The rank mpirun blames in its output ("process rank 1 ...", "[[x,y],1]"), or -1.
int blamed_rank_from_output(const std::string& output);
WorldFailure classify_failure(const std::vector<Event>& world_events, const std::string& output,
                              int wait_status);
// Step of the newest checkpoint under root whose manifest parses and whose
// files match their sizes and checksums (what a restart will resume from);
// 0 when there is none.
int64_t newest_intact_checkpoint_step(const std::string& root);
// Last "step" in metrics.jsonl (0 when missing or empty).
int64_t last_metrics_step(const std::string& path);

// Runs the world until it finishes or the restart budget is spent.
SupervisorResult run_supervisor(const SupervisorOptions& o);

}  // namespace keel::resilience
