// Fault injection: applies a FaultPlan at fixed points of a training step on
// this rank (before the step, after the backward, after the update, after a
// checkpoint). Each fault fires once per run, even across restarts of the
// world: firing appends an "inject" event with its fault_id to events.jsonl
// (fsynced before the fault acts), and a restarted rank reads those events
// back and skips what already fired. Faults with every_start fire on every
// start of the world instead (a rank that keeps failing).
#pragma once
#include <cstdint>
#include <functional>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "nn/parameter.h"
#include "resilience/events_log.h"
#include "resilience/fault_plan.h"
#include "train/adamw.h"

namespace keel::resilience {

// Ids of the faults recorded as fired ("inject" events) in events.
std::set<int> fired_fault_ids(const std::vector<Event>& events);

class FaultInjector {
 public:
  // events may be null (nothing recorded; faults then fire on every start).
  // `fired` holds the ids that already fired in earlier worlds of this run.
  // be: where parameters, gradients and moments live (null: the host); data
  // faults on a device read the element back, change it and write it again.
  FaultInjector(FaultPlan plan, int rank, int world_size, EventsLog* events,
                std::set<int> fired = {}, backend::Backend* be = nullptr);

  // What a node_loss fault does to the memory of `machines` machines (this
  // rank's and the next ones') before the kill: removes their in-memory snapshots.
  void set_drop_memory(std::function<void(int machines)> drop) { drop_memory_ = std::move(drop); }

  // Steps are 1-based (the step being computed, as metrics.jsonl numbers it).
  // Before the step's first micro-batch: kill, node loss, straggler, hang in a kernel.
  void before_step(int64_t step);
  // After the step, before its in-memory snapshot: straggler where="snapshot".
  void before_snapshot(int64_t step);
  // Halfway through writing the in-memory snapshot of `step`: kill_in_snapshot.
  void in_snapshot(int64_t step);
  // After the local backward, before the gradient exchange: NaN or bit flip in
  // a gradient, hang inside the collective. Returns true when a NaN was
  // written: the caller also poisons this rank's loss before it is averaged,
  // so every replica sees the non-finite step even when the exchange already
  // started during the backward.
  bool after_backward(int64_t step, const std::vector<nn::Parameter*>& params);
  // After the optimizer update: bit flip in a parameter, or (opt given) in a
  // first moment this rank holds (under ZeRO-1 only its shard's). True when a
  // parameter changed (its compute copy must then be derived again).
  bool after_update(int64_t step, const std::vector<nn::Parameter*>& params,
                    train::AdamW* opt = nullptr);
  // Nats to add to the loss the spike detector sees at `step` (0: none).
  double loss_offset(int64_t step);
  // After the checkpoint of `step` was written into `checkpoint_dir`: flips a
  // byte in the middle of its largest file. Returns the file it corrupted, or "".
  std::string after_checkpoint(int64_t step, const std::string& checkpoint_dir);

  const FaultPlan& plan() const { return plan_; }
  // Whether fault id has fired (in this world or an earlier one).
  bool fired(int id) const {
    std::lock_guard<std::mutex> lk(mu_);
    return fired_.count(id) != 0;
  }

 private:
  // The faults of `kind` (and, given `here`, only those it accepts: a kind
  // that fires at several hooks) due at `step` on this rank that have not
  // fired; marks them fired.
  std::vector<const Fault*> due(FaultKind kind, int64_t step, bool (*here)(const Fault&) = nullptr);
  void record(const Fault& f, int64_t step, const std::string& detail);

  FaultPlan plan_;
  int rank_, world_;
  backend::Backend* be_;
  EventsLog* events_;
  std::function<void(int)> drop_memory_;
  mutable std::mutex mu_;     // after_checkpoint may run on a checkpoint-writer thread
  std::set<int> fired_;       // fired in this run (any world)
  std::set<int> fired_here_;  // fired in this world (a NaN repeat continues only here)
};

// Flips bit `bit` of element `index` of the f32 tensor t (IoError-free: the
// caller validated the index). Exposed for tests.
void flip_f32_bit(float* data, int64_t index, int bit);

}  // namespace keel::resilience
