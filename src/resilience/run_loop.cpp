#include "resilience/run_loop.h"

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>

#include <fmt/format.h>

#include "core/error.h"
#include "core/log.h"
#include "io/atomic_file.h"
#include "resilience/checkpoint_retention.h"
#include "resilience/events_log.h"

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
  if (opt_.resume == ResumeMode::Never) {
    if (have && opt_.rank == 0) {
      const std::string aside = fmt::format("{}.replaced-{}", ckpt_dir_, int64_t(unix_now()));
      std::error_code ec;
      fs::rename(ckpt_dir_, aside, ec);
      if (ec)
        fail<IoError>("{}: cannot move the old checkpoints aside to {}: {}", ckpt_dir_, aside,
                      ec.message());
      log().info("starting from scratch: old checkpoints moved to {}", aside);
    }
  } else if (have) {
    info = load_newest(true);
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
    event(std::move(e));
  }
  return info;
}

bool RunLoop::checkpoint_due(int64_t step) const {
  return ckpt_cfg_.every > 0 && (step % ckpt_cfg_.every == 0 || step == trainer_.options().steps);
}

void RunLoop::fill_state(CheckpointState& st) {
  capture_training_state(trainer_, st);
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

train::StepMetrics RunLoop::step() {
  train::StepMetrics m = trainer_.step();
  if (opt_.after_train_step) opt_.after_train_step(m);
  // The manifest carries this step's metrics line: an asynchronous save can
  // be on disk before the line is appended below.
  saving_metrics_line_ = train::metrics_json(m);
  m.ckpt_stall_s = checkpoint_if_due(m.step);
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
