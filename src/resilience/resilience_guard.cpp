#include "resilience/resilience_guard.h"

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <thread>

#include "core/error.h"
#include "core/log.h"
#include "io/atomic_file.h"
#include "resilience/exit_codes.h"
#include "resilience/heartbeat.h"

namespace keel::resilience {

namespace {
[[noreturn]] void default_abort(int code) {
  std::fflush(nullptr);
  ::_exit(code);
}

// How long a rank other than 0 waits for rank 0 to end the world after a
// rollback verdict: rank 0 first lets a checkpoint write in flight finish,
// and a rank that aborted sooner would kill it mid-write. If rank 0 died,
// mpirun ends this rank anyway.
constexpr double kRank0GraceS = 300;
}  // namespace

GuardOptions guard_options(const io::Config& cfg) {
  const io::ResilienceSection& r = cfg.resilience;
  GuardOptions o;
  o.faults = r.faults;
  o.hang = r.hang;
  o.nan = r.nan;
  o.loss_spike = r.loss_spike;
  o.sdc = r.sdc;
  o.watchdog.floor_s = r.hang_floor_s;
  o.watchdog.factor = r.hang_factor;
  o.watchdog.startup_s = r.hang_startup_s;
  o.nan_policy.max_nonfinite = r.nan_max;
  o.nan_policy.repeat_window = r.nan_window;
  o.spike.window = r.spike_window;
  o.spike.min_history = r.spike_min_history;
  o.spike.z_threshold = r.spike_z;
  o.spike.min_delta = r.spike_min_delta;
  o.sdc_every = r.sdc_every;
  o.checkpoint_every = cfg.checkpoint.every;
  o.zero1 = cfg.dist.zero1;
  size_t pos = 0;
  const std::string& list = r.skip_steps;
  while (pos < list.size()) {
    size_t comma = list.find(',', pos);
    if (comma == std::string::npos) comma = list.size();
    const std::string item = list.substr(pos, comma - pos);
    pos = comma + 1;
    if (item.empty()) continue;
    char* end = nullptr;
    const long long v = std::strtoll(item.c_str(), &end, 10);
    if (end != item.c_str() + item.size() || v < 1)
      fail<ConfigError>(
          "{}: resilience.skip_steps: expected comma-separated steps >= 1, got \"{}\"",
          io::config_origin(cfg, "resilience.skip_steps"), list);
    o.skip_steps.push_back(v);
  }
  return o;
}

ResilienceGuard::ResilienceGuard(GuardOptions opt, const std::string& run_dir, int rank,
                                 int world_size, std::vector<nn::Parameter*> params,
                                 AllGatherU64 allgather, AbortFn abort_world)
    : opt_(std::move(opt)),
      rank_(rank),
      world_(world_size),
      params_(std::move(params)),
      allgather_(std::move(allgather)),
      abort_(abort_world ? std::move(abort_world) : AbortFn(default_abort)),
      nan_(opt_.nan_policy),
      spike_(opt_.spike) {
  const std::string path = (std::filesystem::path(run_dir) / kEventsFile).string();
  events_ = std::make_unique<EventsLog>(path);
  injector_ =
      std::make_unique<FaultInjector>(load_fault_plan(opt_.faults), rank_, world_, events_.get(),
                                      fired_fault_ids(read_events(path)), opt_.backend);
  for (int64_t s : opt_.skip_steps) skip_.insert(s);
  if (world_ > 1) {
    progress_dir_ = (std::filesystem::path(run_dir) / "progress").string();
    io::make_dirs(progress_dir_);
    const std::string f = fmt::format("{}/rank-{}", progress_dir_, rank_);
    progress_fd_ = ::open(f.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (progress_fd_ < 0)
      fail<IoError>("{}: cannot open the progress file: {}", f, std::strerror(errno));
  }
  if (opt_.hang)
    watchdog_ = std::make_unique<HangWatchdog>(opt_.watchdog,
                                               [this](int64_t step, double waited, double timeout) {
                                                 on_hang(step, waited, timeout);
                                                 // Returning makes the watchdog _exit(kExitHang)
                                                 // from its own thread (MPI may only be called from
                                                 // the main one); mpirun then ends the other ranks.
                                               });
}

void ResilienceGuard::set_checkpoint_hooks(std::function<void()> drain,
                                           std::function<int64_t()> newest_intact) {
  drain_ = std::move(drain);
  newest_intact_ = std::move(newest_intact);
}

int64_t ResilienceGuard::drain_and_find_resume_step() {
  if (drain_) {
    try {
      drain_();
    } catch (const std::exception& ex) {
      // A write that failed leaves the previous checkpoint as the newest.
      log().error("checkpoint write in flight failed: {}", ex.what());
    }
  }
  if (!newest_intact_) return last_ckpt_.load();
  try {
    return newest_intact_();
  } catch (const std::exception& ex) {
    log().error("cannot find the newest intact checkpoint: {}", ex.what());
    return last_ckpt_.load();
  }
}

void ResilienceGuard::progress(int64_t step, int phase) {
  if (HeartbeatSender* hb = rank_heartbeat()) hb->progress(step, phase);
  if (progress_fd_ < 0) return;
  const int64_t v = step * 8 + phase;
  // Best effort: a lost update only weakens the blame of a later hang.
  if (::pwrite(progress_fd_, &v, sizeof v, 0) != ssize_t(sizeof v))
    log().warn("{}/rank-{}: cannot publish progress: {}", progress_dir_, rank_,
               std::strerror(errno));
}

int ResilienceGuard::hang_blame(std::vector<int64_t>* seen) const {
  std::vector<int64_t> p(size_t(world_), -1);
  for (int r = 0; r < world_ && !progress_dir_.empty(); ++r) {
    const std::string f = fmt::format("{}/rank-{}", progress_dir_, r);
    const int fd = ::open(f.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) continue;
    int64_t v = -1;
    if (::pread(fd, &v, sizeof v, 0) != ssize_t(sizeof v)) v = -1;
    ::close(fd);
    p[size_t(r)] = v;
  }
  if (seen) *seen = p;
  return rank_behind(p);
}

void ResilienceGuard::on_hang(int64_t step, double waited, double timeout) {
  if (rank_ != 0) {
    // Rank 0's watchdog fires at about the same time; it ends the world once
    // its checkpoint write in flight is done. This rank steps in only if it
    // does not (rank 0 itself stuck without its watchdog).
    std::this_thread::sleep_for(std::chrono::duration<double>(std::min(120.0, timeout)));
  }
  const int64_t resume = rank_ == 0 ? drain_and_find_resume_step() : last_ckpt_.load();
  std::vector<int64_t> seen;
  const int blamed = hang_blame(&seen);
  std::vector<std::string> where;
  for (int64_t v : seen)
    where.push_back(v < 0 ? std::string("?") : fmt::format("{}.{}", v / 8, v % 8));
  Event e;
  e.event = "fault";
  e.detector = "hang";
  e.rank = blamed;
  e.world_size = world_;
  e.step = step;
  e.detail = fmt::format(
      "step {} ran {:.1f}s, past its timeout {:.1f}s (seen by rank {}); {}; progress "
      "step.phase per rank: {}",
      step, waited, timeout, rank_,
      blamed >= 0 ? fmt::format("rank {} is behind every other rank", blamed)
                  : std::string("no rank is behind the others"),
      fmt::join(where, " "));
  e.extra = {{"timeout_s", timeout}, {"detected_by", rank_}, {"resume_step", resume}};
  try {
    events_->append(std::move(e));
  } catch (const Error& ex) {
    log().error("hang watchdog: could not record the event: {}", ex.what());
  }
}

ResilienceGuard::~ResilienceGuard() {
  if (progress_fd_ >= 0) ::close(progress_fd_);
}

void ResilienceGuard::record(Event e) {
  if (e.rank == -1 && e.event != "skip_batches") e.rank = rank_;
  if (e.world_size == 0) e.world_size = world_;
  events_->append(std::move(e));
}

void ResilienceGuard::load_state(const nlohmann::json& state) {
  if (!state.is_object()) return;
  try {
    if (state.contains("loss_spike")) spike_.from_json(state["loss_spike"]);
    if (state.contains("skip_steps"))
      for (const auto& s : state["skip_steps"]) skip_.insert(s.get<int64_t>());
  } catch (const nlohmann::json::exception& ex) {
    fail<IoError>("checkpoint health state: bad skip_steps: {}", ex.what());
  }
}

void ResilienceGuard::started_at(int64_t step) {
  last_ckpt_ = step;
  progress(step, kPhaseEnded);
  nan_.reset();
  for (const Event& e : read_events(events_->path()))
    if (e.event == "skip_batches" && e.extra.contains("steps") && e.extra["steps"].is_array())
      for (const auto& s : e.extra["steps"])
        if (s.is_number_integer()) skip_.insert(s.get<int64_t>());
}

nlohmann::json ResilienceGuard::state() const {
  return {{"loss_spike", spike_.to_json()},
          {"skip_steps", std::vector<int64_t>(skip_.begin(), skip_.end())}};
}

train::ReplicaSync* ResilienceGuard::wrap_sync(train::ReplicaSync* inner) {
  sync_ = std::make_unique<InjectingSync>(
      inner, injector_.get(), [this](int64_t step) { begin_step(step - 1); },
      [this](int64_t step, train::AdamW& opt) { after_update(step, opt); });
  sync_->set_on_phase([this](int64_t step, int phase) { progress(step, phase); });
  return sync_.get();
}

void ResilienceGuard::begin_step(int64_t s) {
  if (HeartbeatSender* hb = rank_heartbeat()) hb->resume();
  step_ = s + 1;
  progress(step_, kPhaseBegan);
  if (watchdog_) watchdog_->begin_step(s + 1);
  // A seal the update itself checks (below) needs no pass of its own here.
  if (opt_.sdc && !sealed_in_update_) verify_moments(s + 1);
  if (opt_.sdc && opt_.zero1 && world_ > 1 && allgather_ &&
      (!sync_ || sync_->replicas_identical())) {
    step_digest_ = mix_hash(step_digest_, parameters_hash(params_, opt_.backend));
    ++digested_steps_;
  }
  injector_->before_step(s + 1);
}

void ResilienceGuard::entering_exchange() {
  progress(step_, kPhaseComputed);
}

void ResilienceGuard::after_update(int64_t step, train::AdamW& opt) {
  (void)step;
  // Only the replica check (run_sdc) acts on a broken seal, and a world of one
  // has none: there the seal would cost two reads of every moment a step
  // (about 6% of a gpt2-124m step on two cores) for nothing.
  if (!opt_.sdc || world_ < 2) return;
  // The seal guards host memory between steps; on a device it would read every
  // moment back each step, so there the replica vote alone watches the state.
  if (!opt.backend().host_memory()) return;
  opt_ptr_ = &opt;
  // From the next update on, a backend that can digests the moments as the
  // update reads and writes them: the seal and its check then cost no pass
  // over the moments of their own.
  opt.digest_moments(true);
  if (opt.moment_digests_valid()) {
    if (sealed_ && opt.moments_digest_before() != moments_seal_) moments_changed(step);
    moments_seal_ = opt.moments_digest_after();
    sealed_in_update_ = true;
  } else {
    moments_seal_ = moments_hash(opt);
    sealed_in_update_ = false;
  }
  sealed_ = true;
}

void ResilienceGuard::verify_moments(int64_t step) {
  if (!sealed_ || !opt_ptr_) return;
  if (moments_hash(*opt_ptr_) != moments_seal_) moments_changed(step);
}

void ResilienceGuard::moments_changed(int64_t step) {
  if (local_fault_.empty())
    local_fault_ = fmt::format(
        "the optimizer moments rank {} holds changed between the update of step {} and step {}",
        rank_, step - 1, step);
}

void ResilienceGuard::rollback(int64_t step, const std::string& detector, int rank,
                               const std::string& detail) {
  if (watchdog_) watchdog_->pause();
  // Every rank reaches the same verdict (the loss is the replicas' mean and
  // the hashes are gathered), so rank 0 alone writes it, once a checkpoint
  // write in flight has finished: the events then name the checkpoint the
  // restart will really use.
  if (rank_ == 0) {
    const int64_t back = drain_and_find_resume_step();
    Event f;
    f.event = "fault";
    f.detector = detector;
    f.rank = rank;
    f.step = step;
    f.detail = detail;
    record(f);
    Event r;
    r.event = "rollback";
    r.detector = detector;
    r.rank = rank;
    r.step = back;
    r.steps_lost = step - back;
    r.detail = fmt::format("back to the checkpoint of step {}", back);
    record(r);
    log().error("{} at step {}: {}; rolling back to the checkpoint of step {}", detector, step,
                detail, back);
  } else {
    log().error("{} at step {}: {}; rolling back to the newest checkpoint (rank 0 ends the world)",
                detector, step, detail);
  }
  // Rank 0 ends the world once its events are on disk; another rank aborting
  // first would kill rank 0 before it wrote them (the supervisor would then
  // see a crash) or mid-write of a checkpoint.
  if (rank_ != 0) std::this_thread::sleep_for(std::chrono::duration<double>(kRank0GraceS));
  abort_(kExitRollback);
  ::_exit(kExitRollback);  // abort_ must not return
}

void ResilienceGuard::end_step(const train::StepMetrics& m) {
  if (watchdog_) watchdog_->end_step(m.step_seconds);
  progress(m.step, kPhaseEnded);
  // Between steps (metrics, checkpoints, evaluation) no step clock runs.
  if (HeartbeatSender* hb = rank_heartbeat()) hb->pause();
  const int64_t step = m.step;
  const bool nonfinite = !std::isfinite(m.loss) || !std::isfinite(m.grad_norm) || m.skipped;
  if (opt_.nan) {
    const NanAction a = nan_.observe(step, nonfinite);
    if (a == NanAction::Rollback)
      rollback(step, "nan", -1,
               fmt::format("non-finite loss {} / grad norm {} again", m.loss, m.grad_norm));
    if (a == NanAction::Skipped && rank_ == 0) {
      Event e;
      e.event = "fault";
      e.detector = "nan";
      e.step = step;
      e.rank = -1;
      e.detail =
          fmt::format("non-finite loss {} / grad norm {}: update skipped", m.loss, m.grad_norm);
      record(e);
    }
  }
  if (opt_.loss_spike && !nonfinite) {
    const double seen = m.loss + injector_->loss_offset(step);
    const SpikeVerdict v = spike_.observe(seen);
    if (v.spike) {
      skip_.insert(step);
      if (rank_ == 0) {
        Event e;
        e.event = "skip_batches";
        e.step = step;
        e.detail = fmt::format("the batches of step {} are skipped from now on", step);
        e.extra = {{"steps", {step}}};
        record(e);
      }
      rollback(step, "loss_spike", -1,
               fmt::format("loss {:.4f} vs median {:.4f} (robust z {:.1f})", seen, v.median, v.z));
    }
  }
  const bool checkpoint_step = opt_.checkpoint_every > 0 && step % opt_.checkpoint_every == 0;
  // DiLoCo replicas differ between outer steps by design: compare them only
  // where they agree.
  const bool comparable = !sync_ || sync_->replicas_identical();
  if (opt_.sdc && comparable &&
      ((opt_.sdc_every > 0 && step % opt_.sdc_every == 0) || checkpoint_step))
    run_sdc(step);
}

void ResilienceGuard::run_sdc(int64_t step) {
  if (world_ < 2 || step == last_sdc_step_) return;
  last_sdc_step_ = step;
  if (!allgather_) {
    if (!warned_no_sdc_) log().warn("replica hash check off: no allgather for {} ranks", world_);
    warned_no_sdc_ = true;
    return;
  }
  verify_moments(step + 1);
  uint64_t h = parameters_hash(params_, opt_.backend);
  if (digested_steps_ > 0) h = mix_hash(step_digest_, h);
  step_digest_ = 0;
  digested_steps_ = 0;
  const SdcVerdict v = sdc_vote(allgather_(h));
  // State only this rank holds (its ZeRO-1 moments) has no replica to vote
  // with: each rank says whether its own checksum still held.
  const std::vector<uint64_t> flags = allgather_(local_fault_.empty() ? 0 : 1);
  std::vector<int> flagged;
  for (size_t r = 0; r < flags.size(); ++r)
    if (flags[r]) flagged.push_back(int(r));
  if (!flagged.empty()) {
    const std::string mine = local_fault_;
    local_fault_.clear();
    rollback(step, "sdc", flagged.size() == 1 ? flagged[0] : -1,
             fmt::format("the optimizer state of rank(s) {} changed between two updates{}",
                         fmt::join(flagged, ","), mine.empty() ? "" : " (" + mine + ")"));
  }
  if (v.ok) return;
  const int odd = v.odd_ranks.size() == 1 ? v.odd_ranks[0] : -1;
  rollback(step, "sdc", odd,
           v.has_majority
               ? fmt::format("parameter hash of rank(s) {} differs from the majority{}",
                             fmt::join(v.odd_ranks, ","),
                             opt_.zero1 ? " (parameters digested every step: ZeRO-1)" : "")
               : std::string("replica parameter hashes differ, no majority"));
}

void ResilienceGuard::pause_step_clock() {
  if (watchdog_) watchdog_->pause();
  if (HeartbeatSender* hb = rank_heartbeat()) hb->pause();
}

void ResilienceGuard::before_checkpoint(int64_t step) {
  if (watchdog_) watchdog_->pause();
  if (opt_.sdc) run_sdc(step);
}

void ResilienceGuard::after_checkpoint(int64_t step, const std::string& dir) {
  last_ckpt_ = step;
  injector_->after_checkpoint(step, dir);
}

}  // namespace keel::resilience
