#include "resilience/run_loop.h"

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <span>

#include <fmt/format.h>

#include "core/error.h"
#include "core/log.h"
#include "io/atomic_file.h"
#include "resilience/checkpoint_retention.h"
#include "resilience/events_log.h"
#include "resilience/state_image.h"

namespace keel::resilience {

namespace fs = std::filesystem;

RunLoop::RunLoop(train::Trainer& trainer, const io::Config& cfg, RunLoopOptions opt)
    : trainer_(trainer),
      ckpt_cfg_(cfg.checkpoint),
      train_cfg_(cfg.train),
      config_map_(config_manifest_map(cfg)),
      run_dir_(cfg.run.dir),
      ckpt_dir_(cfg.checkpoint.dir.empty() ? (fs::path(cfg.run.dir) / "checkpoints").string()
                                           : cfg.checkpoint.dir),
      opt_(std::move(opt)) {
  // The global batch, which the data order depends on; train.grad_accum alone
  // may differ after an elastic restart (config_key_may_differ).
  config_map_["train.micro_batches_per_step"] =
      std::to_string(int64_t(opt_.world_size) * cfg.train.grad_accum);
  if (opt_.world_size < 1 || opt_.rank < 0 || opt_.rank >= opt_.world_size)
    fail("RunLoop: rank {} is outside world size {}", opt_.rank, opt_.world_size);
  if (opt_.sync) trainer_.set_replica_sync(opt_.sync);
  if (!opt_.snapshot_shards.empty() && cfg.resilience.snapshot_every > 0) {
    SnapshotOptions so;
    so.every = cfg.resilience.snapshot_every;
    so.run_dir = run_dir_;
    so.rank = opt_.rank;
    so.world_size = opt_.world_size;
    so.comm = opt_.comm;
    so.shards = opt_.snapshot_shards;
    so.n_params = trainer_.optimizer().params().size();
    so.config_hash = snapshot_config_hash(config_map_, opt_.tokenizer_id);
    so.halfway = opt_.snapshot_halfway;
    // The copy runs between steps, when the backend's threads are idle.
    so.threads = trainer_.optimizer().backend().threads();
    snapshots_ = std::make_unique<SnapshotReplicator>(std::move(so));
    // The buddy copy of snapshot S travels during the next step and must be
    // stored before any rank can finish that step and overwrite its own S-1
    // slot with S+1. Finished only at the next snapshot, a machine lost
    // while a slower rank was still between the step's collectives and its
    // snapshot found the lost shard's copies (S-2, S-1) and a faster rank's
    // own slots (S, S+1) without a step in common, and the world restarted
    // from disk. Finished before the gradient exchange (the trainer's hook
    // below), every rank's slots share step S.
  }
  // The snapshot copy waits on the buddy rank, so a rank that reaches it says
  // so first: otherwise a rank waiting there for one hung in its backward
  // looks as far along as that rank, and the hang is blamed on nobody.
  if (snapshots_ || opt_.entering_exchange)
    trainer_.set_before_gradient_sync([this] {
      if (opt_.entering_exchange) opt_.entering_exchange();
      if (snapshots_) snapshots_->complete();
    });
  if (opt_.rank == 0 && ckpt_cfg_.every > 0)
    writer_ = std::make_unique<AsyncCheckpointer>(
        ckpt_dir_, CheckpointWriteOptions{ckpt_cfg_.keep_last, ckpt_cfg_.keep_every},
        ckpt_cfg_.async, [this](const WrittenCheckpoint& w) {
          Event e;
          e.event = "checkpoint";
          e.step = w.step;
          e.detail = w.path;
          e.extra = {{"bytes", w.bytes}, {"write_s", w.seconds}};
          event(std::move(e));
          if (opt_.on_checkpoint_written) opt_.on_checkpoint_written(w.step, w.path);
        });
}

RunLoop::~RunLoop() = default;

void RunLoop::event(Event e) const {
  if (opt_.rank != 0) return;
  e.world_size = opt_.world_size;
  // Opened per event: the writer thread and the loop append to the same file,
  // each line with one O_APPEND write, so they never interleave.
  EventsLog((fs::path(run_dir_) / kEventsFile).string()).append(std::move(e));
}

std::optional<ResumeInfo> RunLoop::load_newest(bool report) {
  // A ZeRO-1 optimizer holds only its shard's moments: make all of them
  // present so the full saved state loads in place (the next sharded update
  // releases the other ranks' parts again).
  trainer_.optimizer().materialize_moments();
  CheckpointExpectations want;
  want.config = config_map_;
  want.tokenizer_id = opt_.tokenizer_id;
  want.layout = training_state_layout(trainer_);
  ResumeInfo info;
  auto on_reject = [&](const RejectedCheckpoint& r) {
    log().warn("checkpoint skipped: {}", r.reason);
    info.rejected.push_back(r);
    if (report) {
      Event e;
      e.event = "fault";
      e.detector = "checkpoint_corrupt";
      e.step = checkpoint_step_from_name(fs::path(r.path).filename().string()).value_or(0);
      e.detail = r.reason;
      event(std::move(e));
    }
  };
  auto ckpt = load_newest_verified(ckpt_dir_, want, on_reject);
  if (!ckpt) return std::nullopt;
  restore_training_state(*ckpt, trainer_);
  if (opt_.load_health) opt_.load_health(ckpt->manifest.health);
  if (opt_.load_extra) opt_.load_extra(ckpt->manifest.extra, ckpt->extra ? &*ckpt->extra : nullptr);
  if (opt_.sync)
    opt_.sync->load_state(ckpt->manifest.extra.value("replicas", nlohmann::json::object()),
                          ckpt->extra ? &*ckpt->extra : nullptr);
  if (ckpt->manifest.world_size != opt_.world_size)
    log().warn("{}: written by {} ranks, resumed on {}", ckpt->path, ckpt->manifest.world_size,
               opt_.world_size);
  info.path = ckpt->path;
  info.step = ckpt->manifest.step;
  if (const auto it = ckpt->manifest.extra.find("metrics_line");
      it != ckpt->manifest.extra.end() && it->is_string())
    info.metrics_line = it->get<std::string>();
  return info;
}

uint64_t RunLoop::snapshot_run_id(bool fresh) {
  // Rank 0 keeps the id in the run directory; the others take it from rank 0.
  uint64_t id = 0;
  if (opt_.rank == 0) {
    id = fresh ? 0 : read_snapshot_run_id(run_dir_);
    if (id == 0) id = new_snapshot_run_id(run_dir_);
  }
  if (opt_.comm) opt_.comm->broadcast(std::as_writable_bytes(std::span<uint64_t>(&id, 1)), 0);
  return id;
}

std::optional<ResumeInfo> RunLoop::resume_from_snapshot(const std::optional<ResumeInfo>& disk,
                                                        nlohmann::json& copies, std::string& why) {
  const uint64_t id = snapshot_run_id(false);
  // A world that ended in a rollback (NaN, loss spike, corruption) threw its
  // state away: its snapshots may hold that state, so the next one uses disk.
  std::string rollback;
  if (opt_.rank == 0) {
    for (const Event& e : read_events((fs::path(run_dir_) / kEventsFile).string())) {
      if (e.event == "rollback") rollback = e.detector.empty() ? "rollback" : e.detector;
      if ((e.event == "resume" || e.event == "start") &&
          e.extra.value("source", "") != "supervisor") {
        rollback.clear();
        earlier_world_ = true;
      }
    }
  }
  uint64_t rolled_back = rollback.empty() ? 0 : 1;
  if (opt_.comm)
    opt_.comm->broadcast(std::as_writable_bytes(std::span<uint64_t>(&rolled_back, 1)), 0);
  const SnapshotDecision d =
      rolled_back ? SnapshotDecision{} : snapshots_->decide(disk ? disk->step : 0, id);
  if (d.step == 0) {
    why = rolled_back ? fmt::format(
                            "the previous world rolled back ({}): its snapshots may hold "
                            "the state it threw away",
                            rollback.empty() ? std::string("on rank 0's word") : rollback)
                      : d.why_not;
    // Older than the state this world starts from, or of another lineage.
    snapshots_->discard();
    return std::nullopt;
  }
  const SnapshotImages img = snapshots_->fetch(d);
  const std::string what = fmt::format("snapshot of step {}", d.step);
  const StateImageView common = parse_state_image(img.common, what);
  const StateImageView moments = parse_state_image(img.moments, what + " (optimizer shard)");
  const auto reader = [&](const StateImageView& v, const char* group) {
    return [&v, group, &what](const std::string& name, Tensor& h) {
      const StateImageEntry* e = v.find(group, name);
      if (!e) fail<CheckpointError>("{}: tensor '{}' ({}) is missing", what, name, group);
      if (e->dtype != h.dtype() || e->shape != h.shape())
        fail<CheckpointError>("{}: tensor '{}' is {}{} but this run's model has {}{}", what, name,
                              dtype_name(e->dtype), e->shape.str(), dtype_name(h.dtype()),
                              h.shape().str());
      std::memcpy(h.raw(), e->bytes.data(), e->bytes.size());
    };
  };
  trainer_.optimizer().materialize_moments();
  restore_training_tensors(trainer_, reader(common, kImageParams), reader(moments, kImageOptimizer),
                           snapshots_->shard(), reader(common, kImageModelState),
                           common.manifest.step, common.manifest.optimizer_t);
  if (opt_.load_health) opt_.load_health(common.manifest.health);
  if (opt_.load_extra) opt_.load_extra(common.manifest.extra, nullptr);
  if (opt_.sync)
    opt_.sync->load_state(common.manifest.extra.value("replicas", nlohmann::json::object()),
                          nullptr);
  snapshots_->restored(d.step);
  // A checkpoint due by the snapshot's step is not on disk (its writer died
  // mid-write): a later rollback, which trusts the disk alone, would go back
  // past it. One is written after the next step instead. Every rank sees the
  // same disk and snapshot steps, so all of them take part.
  const int64_t on_disk = disk ? disk->step : 0;
  if (ckpt_cfg_.every > 0 && d.step / ckpt_cfg_.every > on_disk / ckpt_cfg_.every) {
    checkpoint_pending_ = true;
    log().info(
        "resumed from the snapshot of step {}, newer than the checkpoint due by then (disk "
        "holds step {}): a checkpoint is written after the next step",
        d.step, on_disk);
  }
  ResumeInfo info;
  info.path = "memory";
  info.step = d.step;
  info.source = "snapshot";
  if (const auto it = common.manifest.extra.find("metrics_line");
      it != common.manifest.extra.end() && it->is_string())
    info.metrics_line = it->get<std::string>();
  copies = d.copies;
  log().info("resumed from the in-memory snapshot of step {}", d.step);
  return info;
}

std::optional<ResumeInfo> RunLoop::start() {
  std::optional<ResumeInfo> info;
  // A save or a retention delete cut short by a kill leaves parts behind;
  // only the writing rank removes them (the others just skip them).
  if (opt_.rank == 0)
    for (const std::string& p : clean_checkpoint_leftovers(ckpt_dir_))
      log().warn("removed the leftover of an interrupted checkpoint save or delete: {}", p);
  const bool have = !list_checkpoint_steps(ckpt_dir_).empty();
  if (opt_.resume == ResumeMode::Require && !have)
    fail<CheckpointError>("{}: no checkpoint to resume from", ckpt_dir_);
  nlohmann::json snapshot_copies;
  std::string snapshot_why;
  if (opt_.resume == ResumeMode::Never) {
    if (have && opt_.rank == 0) {
      // Named by the second; a second fresh start within it takes the next
      // free suffix instead of failing on the name the first one took.
      const std::string stamp = fmt::format("{}.replaced-{}", ckpt_dir_, int64_t(unix_now()));
      std::string aside = stamp;
      std::error_code ec;
      for (int n = 2; fs::exists(aside, ec); ++n) aside = fmt::format("{}-{}", stamp, n);
      fs::rename(ckpt_dir_, aside, ec);
      if (ec)
        fail<IoError>("{}: cannot move the old checkpoints aside to {}: {}", ckpt_dir_, aside,
                      ec.message());
      log().info("starting from scratch: old checkpoints moved to {}", aside);
    }
    if (snapshots_) {
      // A fresh start never loads what an earlier start of this run left in memory.
      snapshots_->discard();
      snapshots_->set_run_id(snapshot_run_id(true));
    }
  } else {
    if (have) info = load_newest(true);
    if (snapshots_)
      if (auto s = resume_from_snapshot(info, snapshot_copies, snapshot_why)) info = std::move(s);
  }
  if (opt_.rank == 0) {
    io::make_dirs(run_dir_);
    const std::string mpath = (fs::path(run_dir_) / "metrics.jsonl").string();
    // A kill between an asynchronous save and the append of its step's line
    // leaves the line only in the manifest: it is put back, so metrics.jsonl
    // has every step through the checkpoint.
    const int64_t last_kept = info ? train::keep_metrics_through(mpath, info->step) : 0;
    const bool line_lost = info && !info->metrics_line.empty() && last_kept < info->step;
    metrics_ = std::make_unique<train::MetricsLog>(mpath, !info);
    if (line_lost) metrics_->append_line(info->metrics_line);
    Event e;
    e.event = info ? "resume" : "start";
    e.step = info ? info->step : trainer_.step_count();
    e.detail = info ? info->path : "";
    if (info) {
      e.extra = {{"source", info->source}};
      if (info->source == "snapshot") e.extra["copies"] = snapshot_copies;
      if (snapshots_ && info->source == "disk" && !snapshot_why.empty())
        e.extra["snapshot_not_used"] = snapshot_why;
    } else if (snapshots_ && earlier_world_ && !snapshot_why.empty()) {
      // A restart from scratch: why the earlier world's snapshots were not used.
      e.extra = {{"snapshot_not_used", snapshot_why}};
    }
    event(std::move(e));
  }
  return info;
}

bool RunLoop::checkpoint_due(int64_t step) const {
  return ckpt_cfg_.every > 0 && (step % ckpt_cfg_.every == 0 || step == trainer_.options().steps);
}

void RunLoop::fill_state(CheckpointState& st) {
  capture_training_state(trainer_, st);
  fill_manifest(st);
}

void RunLoop::fill_manifest(CheckpointState& st) {
  CheckpointManifest& m = st.manifest;
  const auto& o = trainer_.options();
  m.world_size = opt_.world_size;
  m.tokenizer_id = opt_.tokenizer_id;
  m.config = config_map_;
  m.rng = {{"seed", train_cfg_.seed},
           {"data_cursor_step", m.step},
           {"micro_batches_per_step", o.data_world * o.grad_accum}};
  m.lr_schedule = {{"lr", o.schedule.lr},
                   {"min_lr", o.schedule.min_lr},
                   {"warmup_steps", o.schedule.warmup_steps},
                   {"total_steps", o.schedule.total_steps},
                   {"next_lr", o.schedule.at(m.step)}};
  m.health = opt_.save_health ? opt_.save_health() : nlohmann::json::object();
  CheckpointExtra extra;
  if (opt_.save_extra) opt_.save_extra(extra);
  if (opt_.sync) {
    nlohmann::json replicas = nlohmann::json::object();
    opt_.sync->save_state(replicas, extra.tensors);
    if (!replicas.empty()) extra.json["replicas"] = std::move(replicas);
  }
  if (!saving_metrics_line_.empty()) extra.json["metrics_line"] = saving_metrics_line_;
  m.extra = extra.json;
  st.extra = std::move(extra.tensors);
}

double RunLoop::save_checkpoint() {
  const auto t0 = std::chrono::steady_clock::now();
  // Collective: every rank takes part even though only rank 0 writes.
  if (opt_.before_checkpoint) opt_.before_checkpoint(trainer_.step_count());
  if (opt_.sync) opt_.sync->gather_optimizer_state(trainer_.optimizer());
  if (opt_.rank == 0) {
    if (!writer_)
      writer_ = std::make_unique<AsyncCheckpointer>(
          ckpt_dir_, CheckpointWriteOptions{ckpt_cfg_.keep_last, ckpt_cfg_.keep_every},
          ckpt_cfg_.async);
    writer_->save([this](CheckpointState& st) { fill_state(st); });
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double RunLoop::take_snapshot() {
  const auto t0 = std::chrono::steady_clock::now();
  // Written into shared memory before the next step: the trainer's own
  // tensors are read in place (alias), one pass from them to the slot.
  capture_training_state(trainer_, snapshot_state_, snapshots_->shard(), /*alias=*/true);
  fill_manifest(snapshot_state_);
  snapshots_->take(snapshot_state_);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

train::StepMetrics RunLoop::step() {
  // The copy to the buddy rank usually arrived during the last step's work.
  if (snapshots_) snapshots_->poll();
  train::StepMetrics m = trainer_.step();
  if (opt_.after_train_step) opt_.after_train_step(m);
  // The manifest carries this step's metrics line: an asynchronous save can
  // be on disk before the line is appended below.
  saving_metrics_line_ = train::metrics_json(m);
  m.ckpt_stall_s = checkpoint_if_due(m.step);
  // After the detectors judged the step (a snapshot is only of a judged state).
  if (snapshots_ && snapshots_->due(m.step)) {
    if (opt_.before_snapshot) opt_.before_snapshot(m.step);
    m.snapshot_stall_s = take_snapshot();
    m.snapshot_bytes = snapshots_->bytes_held();
  }
  saving_metrics_line_.clear();
  if (metrics_) metrics_->append(m);
  if (opt_.on_step) opt_.on_step(m);
  return m;
}

std::optional<double> RunLoop::checkpoint_if_due(int64_t step) {
  // A sync whose replicas drift apart between outer steps (DiLoCo) holds a
  // due checkpoint until they agree again (at the latest, the last step).
  if (checkpoint_due(step)) checkpoint_pending_ = true;
  if (!checkpoint_pending_ || (opt_.sync && !opt_.sync->replicas_identical())) return std::nullopt;
  checkpoint_pending_ = false;
  return save_checkpoint();
}

void RunLoop::run() {
  if (opt_.rank == 0 && !metrics_)
    fail("RunLoop::run: call start() first (it resumes and opens metrics.jsonl)");
  while (!trainer_.done()) {
    // A skipped step keeps its place in the data order and the LR schedule
    // (both are indexed by the step count) but applies no update.
    if (opt_.skip_step && opt_.skip_step(trainer_.step_count())) {
      log().info("step {}: batches skipped (resilience skip list)", trainer_.step_count() + 1);
      trainer_.set_step_count(trainer_.step_count() + 1);
      // The checkpoint due at a skipped step is still written (every rank
      // skips the same steps, so the collective save lines up): without it,
      // a failure after a skipped checkpoint step rolls back two intervals.
      checkpoint_if_due(trainer_.step_count());
      continue;
    }
    step();
  }
  finish();
  if (snapshots_) {
    // The run is whole on disk once rank 0's last write is done (finish()
    // above): only then may the in-memory copies go.
    snapshots_->complete();
    if (opt_.comm) opt_.comm->barrier();
    snapshots_->discard();
    if (opt_.rank == 0) unlink_run_snapshots(run_dir_);
  }
}

void RunLoop::finish() {
  if (writer_) writer_->wait();
}

std::optional<ResumeInfo> RunLoop::restore_newest() {
  finish();
  const int64_t from = trainer_.step_count();
  auto info = load_newest(true);
  if (info) {
    Event e;
    e.event = "rollback";
    e.step = info->step;
    e.steps_lost = from - info->step;
    e.detail = info->path;
    event(std::move(e));
  }
  return info;
}

}  // namespace keel::resilience
