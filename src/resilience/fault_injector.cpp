#include "resilience/fault_injector.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <thread>

#include "core/error.h"
#include "core/log.h"

namespace keel::resilience {

namespace fs = std::filesystem;

std::set<int> fired_fault_ids(const std::vector<Event>& events) {
  std::set<int> ids;
  for (const Event& e : events)
    if (e.event == "inject" && e.extra.contains("fault_id") && e.extra["fault_id"].is_number() &&
        !e.extra.value("every_start", false))
      ids.insert(e.extra["fault_id"].get<int>());
  return ids;
}

void flip_f32_bit(float* data, int64_t index, int bit) {
  uint32_t u;
  std::memcpy(&u, data + index, 4);
  u ^= uint32_t(1) << bit;
  std::memcpy(data + index, &u, 4);
}

namespace {

// Applies f to element i of f32 tensor t, on the host or in be's device memory.
void edit_f32(backend::Backend* be, const Tensor& t, int64_t i,
              const std::function<void(float*)>& f) {
  if (t.on_host()) {
    f(t.data<float>() + i);
    return;
  }
  if (!be)
    fail("fault injection: tensor {} lives on {} and no backend was given", t.desc(),
         t.device_name());
  float x = 0;
  float* at = t.data<float>() + i;  // a device address: only the backend dereferences it
  be->download(&x, at, sizeof x);
  f(&x);
  be->upload(at, &x, sizeof x);
}

}  // namespace

FaultInjector::FaultInjector(FaultPlan plan, int rank, int world_size, EventsLog* events,
                             std::set<int> fired, backend::Backend* be)
    : plan_(std::move(plan)),
      rank_(rank),
      world_(world_size),
      be_(be),
      events_(events),
      fired_(std::move(fired)) {
  for (const Fault& f : plan_.faults)
    if (f.every_start) fired_.erase(f.id);
}

void FaultInjector::record(const Fault& f, int64_t step, const std::string& detail) {
  log().warn("fault injection: {} at step {} on rank {}{}", fault_kind_name(f.kind), step, rank_,
             detail.empty() ? "" : ": " + detail);
  if (!events_) return;
  Event e;
  e.event = "inject";
  e.rank = rank_;
  e.step = step;
  e.world_size = world_;
  e.detail = fmt::format("{}{}", fault_kind_name(f.kind), detail.empty() ? "" : ": " + detail);
  e.extra = {{"fault_id", f.id}, {"kind", fault_kind_name(f.kind)}};
  if (f.every_start) e.extra["every_start"] = true;
  events_->append(e);
}

std::vector<const Fault*> FaultInjector::due(FaultKind kind, int64_t step,
                                             bool (*here)(const Fault&)) {
  std::lock_guard<std::mutex> lk(mu_);
  std::vector<const Fault*> out;
  for (const Fault& f : plan_.faults) {
    if (f.kind != kind || (f.rank != -1 && f.rank != rank_) || (here && !here(f))) continue;
    // A NaN fault covers `repeat` consecutive steps from its first firing.
    const bool in_repeat = kind == FaultKind::Nan && step > f.step && step < f.step + f.repeat;
    if (step != f.step && !in_repeat) continue;
    if (step == f.step) {
      if (fired_.count(f.id)) continue;
      fired_.insert(f.id);
      fired_here_.insert(f.id);
    } else if (!fired_here_.count(f.id)) {
      continue;  // the first step of the repeat did not fire in this world
    }
    out.push_back(&f);
  }
  return out;
}

namespace {
[[noreturn]] void sleep_forever();

// Where faults of the kinds that fire at more than one hook fire.
bool at_snapshot(const Fault& f) {
  return f.where == "snapshot";
}
bool before_the_step(const Fault& f) {
  return f.where != "snapshot";
}
bool in_kernel(const Fault& f) {
  return f.where == "kernel";
}
bool in_collective(const Fault& f) {
  return f.where != "kernel";
}
bool on_grad(const Fault& f) {
  return f.target == "grad";
}
bool after_update_target(const Fault& f) {
  return f.target != "grad";
}
}  // namespace

void FaultInjector::before_snapshot(int64_t step) {
  for (const Fault* f : due(FaultKind::Straggler, step, at_snapshot)) {
    record(*f, step, fmt::format("sleep {}s before the in-memory snapshot", f->seconds));
    std::this_thread::sleep_for(std::chrono::duration<double>(f->seconds));
  }
}

void FaultInjector::in_snapshot(int64_t step) {
  for (const Fault* f : due(FaultKind::KillInSnapshot, step)) {
    record(*f, step, "SIGKILL halfway through the in-memory snapshot");
    ::kill(::getpid(), SIGKILL);
    sleep_forever();
  }
}

namespace {
[[noreturn]] void sleep_forever() {
  for (;;) std::this_thread::sleep_for(std::chrono::hours(1));
}

nn::Parameter* find_param(const std::vector<nn::Parameter*>& params, const Fault& f) {
  if (params.empty()) fail("fault injection: the model has no parameters");
  if (f.param.empty()) return params.front();
  for (nn::Parameter* p : params)
    if (p->name == f.param) return p;
  fail<ConfigError>("fault {} (bitflip): no parameter named '{}' (first is '{}')", f.id, f.param,
                    params.front()->name);
}
}  // namespace

void FaultInjector::before_step(int64_t step) {
  for (const Fault* f : due(FaultKind::Straggler, step, before_the_step)) {
    record(*f, step, fmt::format("sleep {}s", f->seconds));
    std::this_thread::sleep_for(std::chrono::duration<double>(f->seconds));
  }
  for (const Fault* f : due(FaultKind::Kill, step)) {
    if (f->after > 0) {
      // Mid-step: the step goes on and a timer kills the rank inside it.
      std::thread([this, f, step] {
        std::this_thread::sleep_for(std::chrono::duration<double>(f->after));
        record(*f, step, fmt::format("SIGKILL {:.3f} s into the step", f->after));
        ::kill(::getpid(), SIGKILL);
      }).detach();
      continue;
    }
    record(*f, step, "SIGKILL");
    ::kill(::getpid(), SIGKILL);
    sleep_forever();
  }
  for (const Fault* f : due(FaultKind::NodeLoss, step)) {
    record(*f, step,
           fmt::format("in-memory snapshots of {} machine(s) removed, then SIGKILL", f->machines));
    if (drop_memory_) drop_memory_(f->machines);
    ::kill(::getpid(), SIGKILL);
    sleep_forever();
  }
  for (const Fault* f : due(FaultKind::Hang, step, in_kernel)) {
    record(*f, step, "hang in a kernel");
    sleep_forever();
  }
}

bool FaultInjector::after_backward(int64_t step, const std::vector<nn::Parameter*>& params) {
  bool nan = false;
  for (const Fault* f : due(FaultKind::Hang, step, in_collective)) {
    record(*f, step, "hang inside a collective");
    sleep_forever();
  }
  for (const Fault* f : due(FaultKind::Nan, step)) {
    nn::Parameter* p = find_param(params, *f);
    const int64_t i = f->index % p->numel();
    record(*f, step, fmt::format("NaN into grad of {}[{}]", p->name, i));
    edit_f32(be_, p->grad, i, [](float* x) { *x = std::numeric_limits<float>::quiet_NaN(); });
    nan = true;
  }
  for (const Fault* f : due(FaultKind::BitFlip, step, on_grad)) {
    nn::Parameter* p = find_param(params, *f);
    const int64_t i = f->index % p->numel();
    record(*f, step, fmt::format("flip bit {} of grad {}[{}]", f->bit, p->name, i));
    edit_f32(be_, p->grad, i, [&](float* x) { flip_f32_bit(x, 0, f->bit); });
  }
  return nan;
}

bool FaultInjector::after_update(int64_t step, const std::vector<nn::Parameter*>& params,
                                 train::AdamW* opt) {
  bool edited = false;
  for (const Fault* f : due(FaultKind::BitFlip, step, after_update_target)) {
    if (f->target == "moment") {
      if (!opt)
        fail<ConfigError>("fault {} (bitflip): target \"moment\" needs an optimizer", f->id);
      // The named parameter if this rank holds its moments, else the first it
      // holds: under ZeRO-1 a rank has only its shard's.
      size_t at = opt->shard_begin();
      for (size_t i = opt->shard_begin(); i < opt->shard_end(); ++i)
        if (!f->param.empty() && opt->params()[i]->name == f->param) at = i;
      if (at >= opt->shard_end() || !opt->m()[at].defined()) {
        record(*f, step, "no optimizer state on this rank: nothing flipped");
        continue;
      }
      const nn::Parameter* p = opt->params()[at];
      const int64_t i = f->index % p->numel();
      record(*f, step,
             fmt::format("flip bit {} of the first moment of {}[{}]", f->bit, p->name, i));
      edit_f32(be_, opt->m()[at], i, [&](float* x) { flip_f32_bit(x, 0, f->bit); });
      continue;
    }
    nn::Parameter* p = find_param(params, *f);
    const int64_t i = f->index % p->numel();
    record(*f, step, fmt::format("flip bit {} of {}[{}]", f->bit, p->name, i));
    edit_f32(be_, p->value, i, [&](float* x) { flip_f32_bit(x, 0, f->bit); });
    edited = true;
  }
  return edited;
}

double FaultInjector::loss_offset(int64_t step) {
  double off = 0;
  for (const Fault* f : due(FaultKind::LossSpike, step)) {
    record(*f, step, fmt::format("loss +{}", f->magnitude));
    off += f->magnitude;
  }
  return off;
}

std::string FaultInjector::after_checkpoint(int64_t step, const std::string& checkpoint_dir) {
  std::string corrupted;
  for (const Fault* f : due(FaultKind::CorruptCheckpoint, step)) {
    std::string largest;
    uintmax_t size = 0;
    std::error_code ec;
    for (const auto& ent : fs::recursive_directory_iterator(checkpoint_dir, ec))
      if (ent.is_regular_file() && ent.file_size() > size) {
        size = ent.file_size();
        largest = ent.path().string();
      }
    if (largest.empty())
      fail<IoError>("fault {} (corrupt_checkpoint): no file in {}", f->id, checkpoint_dir);
    const off_t off = off_t(size / 2);
    record(*f, step, fmt::format("flip a byte of {} at offset {}", largest, off));
    const int fd = ::open(largest.c_str(), O_RDWR);
    if (fd < 0) fail<IoError>("{}: cannot open to corrupt: {}", largest, std::strerror(errno));
    unsigned char b = 0;
    if (::pread(fd, &b, 1, off) != 1) fail<IoError>("{}: cannot read offset {}", largest, off);
    b ^= 0xff;
    if (::pwrite(fd, &b, 1, off) != 1 || ::fsync(fd) != 0)
      fail<IoError>("{}: cannot write offset {}", largest, off);
    ::close(fd);
    corrupted = largest;
  }
  return corrupted;
}

}  // namespace keel::resilience
