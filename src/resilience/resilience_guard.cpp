#include "resilience/resilience_guard.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include "core/error.h"
#include "core/log.h"
#include "resilience/exit_codes.h"

namespace keel::resilience {

namespace {
[[noreturn]] void default_abort(int code) {
  std::fflush(nullptr);
  ::_exit(code);
}
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
  injector_ = std::make_unique<FaultInjector>(load_fault_plan(opt_.faults), rank_, world_,
                                              events_.get(), fired_fault_ids(read_events(path)));
  for (int64_t s : opt_.skip_steps) skip_.insert(s);
  if (opt_.hang)
    watchdog_ = std::make_unique<HangWatchdog>(
        opt_.watchdog, [this](int64_t step, double waited, double timeout) {
          Event e;
          e.event = "fault";
          e.detector = "hang";
          e.step = step;
          e.detail =
              fmt::format("step {} ran {:.1f}s, past its timeout {:.1f}s", step, waited, timeout);
          e.extra = {{"timeout_s", timeout}};
          try {
            record(e);
          } catch (const Error& ex) {
            log().error("hang watchdog: could not record the event: {}", ex.what());
          }
          // Returning makes the watchdog _exit(kExitHang) from its own thread
          // (MPI may only be called from the main one); mpirun then ends the
          // other ranks.
        });
}

ResilienceGuard::~ResilienceGuard() = default;

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
  sync_ = std::make_unique<InjectingSync>(inner, injector_.get(),
                                          [this](int64_t step) { begin_step(step - 1); });
  return sync_.get();
}

void ResilienceGuard::begin_step(int64_t s) {
  if (watchdog_) watchdog_->begin_step(s + 1);
  injector_->before_step(s + 1);
}

void ResilienceGuard::rollback(int64_t step, const std::string& detector, int rank,
                               const std::string& detail) {
  // Every rank reaches the same verdict (the loss is the replicas' mean and
  // the hashes are gathered), so rank 0 alone writes it.
  if (rank_ == 0) {
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
    r.step = last_ckpt_.load();
    r.steps_lost = step - r.step;
    r.detail = fmt::format("back to the checkpoint of step {}", r.step);
    record(r);
  }
  log().error("{} at step {}: {}; rolling back to the checkpoint of step {}", detector, step,
              detail, last_ckpt_.load());
  if (watchdog_) watchdog_->pause();
  // Rank 0 ends the world once its events are on disk; another rank aborting
  // first would kill rank 0 before it wrote them (the supervisor would then
  // see a crash). The wait is bounded in case rank 0 cannot get there.
  if (rank_ != 0) std::this_thread::sleep_for(std::chrono::seconds(10));
  abort_(kExitRollback);
  ::_exit(kExitRollback);  // abort_ must not return
}

void ResilienceGuard::end_step(const train::StepMetrics& m) {
  if (watchdog_) watchdog_->end_step(m.step_seconds);
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
  const SdcVerdict v = sdc_check(params_, allgather_);
  if (v.ok) return;
  const int odd = v.odd_ranks.size() == 1 ? v.odd_ranks[0] : -1;
  rollback(step, "sdc", odd,
           v.has_majority ? fmt::format("parameter hash of rank(s) {} differs from the majority",
                                        fmt::join(v.odd_ranks, ","))
                          : std::string("replica parameter hashes differ, no majority"));
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
