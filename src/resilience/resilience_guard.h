// ResilienceGuard: everything a training rank does to survive faults, behind
// four calls the run loop makes around each step and checkpoint. It owns the
// hang watchdog, the NaN policy, the loss-spike detector, the replica hash
// check (SDC) and the fault injector, writes what they see to events.jsonl,
// and, when the state must be thrown away, aborts the world with
// kExitRollback so the supervisor restarts it from the newest verified
// checkpoint (rollback by restart: the same path as a crash, so it is always
// exercised and leaves no half-reloaded state behind).
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/config.h"
#include "nn/parameter.h"
#include "resilience/events_log.h"
#include "resilience/fault_injector.h"
#include "resilience/hang_watchdog.h"
#include "resilience/injecting_sync.h"
#include "resilience/loss_spike_detector.h"
#include "resilience/nan_policy.h"
#include "resilience/sdc_check.h"
#include "train/metrics.h"

namespace keel::resilience {

struct GuardOptions {
  std::string faults;  // fault plan: a .toml path or "kind=...,step=..." entries; "" none
  bool hang = true, nan = true, loss_spike = true, sdc = true;  // detectors on/off
  HangWatchdogOptions watchdog;
  NanPolicyOptions nan_policy;
  LossSpikeOptions spike;
  int64_t sdc_every = 10;           // replica hash check every K steps...
  int64_t checkpoint_every = 0;     // ...and at every checkpoint step (0: none)
  std::vector<int64_t> skip_steps;  // 1-based steps whose batches are skipped from the start
  // dist.zero1: the parameters are re-gathered from their owners after every
  // update, so the SDC check also digests them at the start of every step.
  bool zero1 = false;
  // Where the parameters live, for hashing device memory (null: the host).
  backend::Backend* backend = nullptr;
};

// [resilience] and checkpoint.every of a validated config as guard options;
// a malformed resilience.skip_steps is a ConfigError naming it.
GuardOptions guard_options(const io::Config& cfg);

class ResilienceGuard {
 public:
  // Ends the world with an exit code; must not return. The default flushes
  // stdio and _exits (mpirun then tears the other ranks down); the dist layer
  // passes MPI_Abort.
  using AbortFn = std::function<void(int code)>;

  // params: the model's parameters (hashed, and targets of injected faults).
  // allgather: one value from every rank (null with one rank: no SDC check).
  ResilienceGuard(GuardOptions opt, const std::string& run_dir, int rank, int world_size,
                  std::vector<nn::Parameter*> params, AllGatherU64 allgather = nullptr,
                  AbortFn abort_world = nullptr);
  ~ResilienceGuard();

  // Restores what a checkpoint saved from state() (the run loop's load hook).
  void load_state(const nlohmann::json& state);
  // The world starts at `step` (0: fresh): adds the batch skips recorded in
  // events.jsonl by earlier worlds (spikes found after the last checkpoint).
  void started_at(int64_t step);
  // Detector state and the skip list, for the checkpoint manifest.
  nlohmann::json state() const;

  // The ReplicaSync to give the trainer: `inner` (may be null) wrapped so that
  // faults can be injected inside the step. Owned by the guard.
  train::ReplicaSync* wrap_sync(train::ReplicaSync* inner);

  // Whether the batches of 0-based step index s are to be skipped (the loop
  // then advances the step counter without an update).
  bool skip_step(int64_t s) const { return skip_.count(s + 1) != 0; }
  // Start of the step with 0-based index s: arms the watchdog, fires
  // injected kills/stragglers/kernel hangs. The sync from wrap_sync calls it
  // from inside trainer.step(); call it yourself only without that sync.
  void begin_step(int64_t s);
  // This rank's forward and backward of the step are done and it is about to
  // wait on the others (snapshot copy, gradient exchange): published for hang
  // blame, as the wrapped sync does when the gradient exchange begins.
  void entering_exchange();
  // Work between a step's update and end_step that is not the step's own (the
  // validation pass): the watchdog and the heartbeat's step clock stop, so a
  // long evaluation is not judged a hang.
  void pause_step_clock();
  // After trainer.step(): the detectors judge the step; a rollback aborts the world.
  void end_step(const train::StepMetrics& m);
  // Before saving the checkpoint of (1-based) step: the watchdog pauses and the
  // replicas compare hashes, so a checkpoint never holds corrupted parameters.
  void before_checkpoint(int64_t step);
  // After the checkpoint of step was written (and verified) into dir; may be
  // called from the checkpoint writer's thread.
  void after_checkpoint(int64_t step, const std::string& dir);

  // How to finish (or give up) a checkpoint write in flight before the world
  // ends, and the newest checkpoint a restart would use: rollback and hang
  // exits call them on rank 0 so that what the events name is what resumes.
  void set_checkpoint_hooks(std::function<void()> drain, std::function<int64_t()> newest_intact);

  // Appends an event (rank and world size filled in when left at -1 / 0).
  void record(Event e);
  EventsLog& events() { return *events_; }
  FaultInjector& injector() { return *injector_; }
  int64_t last_checkpoint_step() const { return last_ckpt_; }

 private:
  [[noreturn]] void rollback(int64_t step, const std::string& detector, int rank,
                             const std::string& detail);
  void run_sdc(int64_t step);
  // The update of `step` was applied: checksum the moments this rank holds.
  void after_update(int64_t step, train::AdamW& opt);
  // Whether the moments still match their checksum; a mismatch is kept for the next check.
  void verify_moments(int64_t step);
  void moments_changed(int64_t step);  // records the local fault
  // This rank reached `phase` (a StepPhase, heartbeat.h) of `step`,
  // published for hang blame.
  void progress(int64_t step, int phase);
  // The rank every other rank is waiting for: the one whose published
  // progress is behind all others (-1: none stands out). Also the raw values.
  int hang_blame(std::vector<int64_t>* seen) const;
  void on_hang(int64_t step, double waited, double timeout);
  int64_t drain_and_find_resume_step();

  GuardOptions opt_;
  int rank_, world_;
  std::vector<nn::Parameter*> params_;
  AllGatherU64 allgather_;
  AbortFn abort_;
  std::unique_ptr<EventsLog> events_;
  std::unique_ptr<FaultInjector> injector_;
  std::unique_ptr<InjectingSync> sync_;
  std::unique_ptr<HangWatchdog> watchdog_;
  NanPolicy nan_;
  LossSpikeDetector spike_;
  std::set<int64_t> skip_;  // 1-based steps
  // Written by the checkpoint writer's thread (after_checkpoint) when writes
  // are asynchronous, read by the training thread on a rollback.
  std::atomic<int64_t> last_ckpt_{0};
  int64_t step_ = 0;  // the (1-based) step begin_step began
  bool warned_no_sdc_ = false;
  int64_t last_sdc_step_ = -1;
  // ZeRO-1: the hashes taken at the start of each step since the last check.
  uint64_t step_digest_ = 0;
  int64_t digested_steps_ = 0;
  // The checksum of the moments after the last update (sealed_: valid).
  train::AdamW* opt_ptr_ = nullptr;
  uint64_t moments_seal_ = 0;
  bool sealed_ = false;
  // The last update checked the moments against the seal as it read them
  // (AdamW::digest_moments): the next step's start need not.
  bool sealed_in_update_ = false;
  std::string local_fault_;  // what this rank found corrupted since the last check
  std::string progress_dir_;
  int progress_fd_ = -1;
  std::function<void()> drain_;
  std::function<int64_t()> newest_intact_;
};

}  // namespace keel::resilience
