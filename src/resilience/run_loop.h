// The training loop of a run, shared by `keel train`, the supervisor and the
// data-parallel launcher: resume from the newest verified checkpoint (or
// start fresh), step the trainer, append metrics.jsonl, checkpoint every
// checkpoint.every steps and at the last step (asynchronously by default),
// and record checkpoint/resume events in events.jsonl.
//
// Data parallelism: every rank runs a RunLoop over its own trainer. Before a
// save every rank calls ReplicaSync::gather_optimizer_state (a collective);
// only rank 0 writes checkpoints, metrics.jsonl and events.jsonl. Every rank
// loads the same newest verified checkpoint when it starts.
//
// In-memory snapshots (snapshot_replicator.h): with `snapshot_shards` set and
// resilience.snapshot_every > 0, every rank snapshots its state after each
// K-th step; a starting world resumes from the newest snapshot that is newer
// than the newest verified checkpoint and has a copy of every shard (the
// resume event says "source": "snapshot" or "disk", and why not a snapshot).
// A world that resumes from disk or starts afresh removes older snapshots;
// a finished run removes its own.
//
// Other components plug in through RunLoopOptions: a per-step callback
// (progress bars, failure detectors), and save/load hooks for the
// health-detector state (the manifest's "health" object) and for extra
// per-component state (the manifest's "extra" object plus named tensors in
// extra.safetensors).
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/config.h"
#include "resilience/async_checkpointer.h"
#include "resilience/checkpoint_reader.h"
#include "resilience/events_log.h"
#include "resilience/snapshot_replicator.h"
#include "train/metrics.h"
#include "train/replica_sync.h"
#include "train/trainer.h"

namespace keel::resilience {

enum class ResumeMode {
  Auto,     // resume when the checkpoint directory holds checkpoints, else start fresh
  Require,  // resume; no checkpoint at all is an error
  Never,    // start fresh; existing checkpoints are moved aside, never deleted
};

struct RunLoopOptions {
  int rank = 0;
  int world_size = 1;
  // Installed on the trainer when set (not owned).
  train::ReplicaSync* sync = nullptr;
  ResumeMode resume = ResumeMode::Auto;
  std::string tokenizer_id;  // recorded in, and checked against, each checkpoint
  // After every step (rank 0 and others alike), with the metrics just logged.
  std::function<void(const train::StepMetrics&)> on_step;
  // Right after trainer.step(), before the step can be checkpointed or
  // logged: failure detectors judge it here (a step that is saved must have
  // been judged first).
  std::function<void(const train::StepMetrics&)> after_train_step;
  // Whether the batches of the 0-based step index s are skipped: run() then
  // advances the step counter without an update.
  std::function<bool(int64_t)> skip_step;
  // After a checkpoint of (1-based) step was written and verified into path
  // (rank 0 only; called from the writer's thread when writes are async).
  std::function<void(int64_t step, const std::string& path)> on_checkpoint_written;
  // Before the checkpoint of (1-based) step is saved, on every rank (the
  // replicas compare parameter hashes there).
  std::function<void(int64_t step)> before_checkpoint;
  // On every rank once its own forward and backward of the step are done,
  // before the first wait on the other ranks (the snapshot copy, then the
  // gradient exchange): hang blame tells the rank still computing from the
  // ranks waiting for it by what each published here.
  std::function<void()> entering_exchange;
  // Health-detector state: saved into / restored from the manifest's "health".
  std::function<nlohmann::json()> save_health;
  std::function<void(const nlohmann::json&)> load_health;
  // Extra component state: `json` goes to the manifest's "extra", tensors to
  // extra.safetensors. load_extra gets the manifest's "extra" and the
  // extra file (nullptr when the checkpoint has none).
  std::function<void(CheckpointExtra&)> save_extra;
  std::function<void(const nlohmann::json&, const io::SafetensorsFile*)> load_extra;
  // Snapshots: the moment range each rank keeps (empty: no snapshots), the
  // communicator (null in a world of one) and the fault-injection hooks
  // called before and halfway through writing the snapshot of a step.
  std::vector<std::pair<size_t, size_t>> snapshot_shards;
  dist::Communicator* comm = nullptr;
  std::function<void(int64_t step)> before_snapshot, snapshot_halfway;
};

struct ResumeInfo {
  std::string path;  // checkpoint directory resumed from
  int64_t step = 0;
  std::vector<RejectedCheckpoint> rejected;  // newer ones skipped, with reasons
  // The metrics.jsonl line of the checkpoint's step, as saved in its manifest
  // (empty for checkpoints that predate it).
  std::string metrics_line;
  std::string source = "disk";  // "disk" or "snapshot"
};

class RunLoop {
 public:
  // trainer must outlive the loop; cfg supplies [checkpoint], run.dir and the
  // config recorded in each manifest.
  RunLoop(train::Trainer& trainer, const io::Config& cfg, RunLoopOptions opt = {});
  ~RunLoop();
  RunLoop(const RunLoop&) = delete;
  RunLoop& operator=(const RunLoop&) = delete;

  // Applies the resume mode and opens metrics.jsonl (truncated on a fresh
  // start; on resume, kept through the resumed step and appended to).
  // Returns where it resumed from (nullopt: fresh start). CheckpointError
  // when checkpoints exist but none verifies, or none exists under Require.
  std::optional<ResumeInfo> start();
  // Steps until the trainer is done, then waits for the last write.
  void run();
  // One step: train, checkpoint when due (the stall goes into the metrics),
  // append metrics.jsonl, call on_step.
  train::StepMetrics step();
  // Snapshots the current state into memory now; returns the stall in seconds.
  double take_snapshot();
  // Checkpoints the current state now; returns the stall in seconds.
  double save_checkpoint();
  // Saves the checkpoint due after `step` (or held since) once the replicas
  // agree; returns the stall in seconds, nothing when nothing was saved.
  std::optional<double> checkpoint_if_due(int64_t step);
  // Waits for a checkpoint write in flight (rethrows its error).
  void finish();
  // Rollback: waits for writes in flight, then restores the newest verified
  // checkpoint (nullopt when there is none; the state is then unchanged).
  std::optional<ResumeInfo> restore_newest();

  const std::string& checkpoint_dir() const { return ckpt_dir_; }
  bool checkpoint_due(int64_t step) const;
  train::Trainer& trainer() { return trainer_; }

 private:
  std::optional<ResumeInfo> load_newest(bool report);
  // Collective: restores from the snapshots when they are newer than `disk`
  // (the checkpoint just loaded, if any); otherwise drops them. Fills `why`
  // with the reason a snapshot was not used (when one existed).
  std::optional<ResumeInfo> resume_from_snapshot(const std::optional<ResumeInfo>& disk,
                                                 nlohmann::json& copies, std::string& why);
  uint64_t snapshot_run_id(bool fresh);
  void fill_state(CheckpointState& st);
  void fill_manifest(CheckpointState& st);
  void event(Event e) const;

  train::Trainer& trainer_;
  io::CheckpointSection ckpt_cfg_;
  io::TrainSection train_cfg_;
  nlohmann::json config_map_;
  std::string run_dir_, ckpt_dir_;
  RunLoopOptions opt_;
  std::unique_ptr<AsyncCheckpointer> writer_;   // rank 0 only
  std::unique_ptr<train::MetricsLog> metrics_;  // rank 0 only
  bool checkpoint_pending_ = false;             // due, but the replicas differ now
  bool earlier_world_ = false;  // rank 0: events.jsonl holds an earlier world's start
  // The metrics line of the step being checkpointed: the manifest carries it,
  // because an asynchronous save can be on disk before the line is appended.
  std::string saving_metrics_line_;
  std::unique_ptr<SnapshotReplicator> snapshots_;
  CheckpointState snapshot_state_;  // reused host buffers of the snapshot copy
};

}  // namespace keel::resilience
