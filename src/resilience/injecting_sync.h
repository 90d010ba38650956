// A ReplicaSync that wraps the real one (or none, for one replica) and gives
// the resilience guard its places inside a step: the step's start (watchdog,
// injected kills and stragglers), after the local backward and before the
// gradient exchange (injected NaN, hang in the collective), and right after
// the optimizer update (injected parameter bit flip).
#pragma once
#include <functional>
#include <span>
#include <vector>

#include "resilience/fault_injector.h"
#include "train/replica_sync.h"

namespace keel::resilience {

class InjectingSync : public train::ReplicaSync {
 public:
  // inner may be null (a single replica); neither pointer is owned.
  // on_begin(step) runs first in begin_step, with the 1-based step.
  // on_update(step, opt) runs after the update, before any injected flip.
  InjectingSync(train::ReplicaSync* inner, FaultInjector* injector,
                std::function<void(int64_t)> on_begin = nullptr,
                std::function<void(int64_t, train::AdamW&)> on_update = nullptr)
      : inner_(inner),
        injector_(injector),
        on_begin_(std::move(on_begin)),
        on_update_(std::move(on_update)) {}

  void begin_step(int64_t step) override;
  void finish_gradients(const std::vector<nn::Parameter*>& params) override;
  // Called with the phase a rank reached inside the step (hang blame).
  void set_on_phase(std::function<void(int64_t step, int phase)> f) { on_phase_ = std::move(f); }
  // The step's loss; NaN from this rank when a NaN was injected this step.
  double mean(double x) override;
  void optimizer_step(train::AdamW& opt, double lr, float grad_scale) override;
  void gather_optimizer_state(train::AdamW& opt) override {
    if (inner_) inner_->gather_optimizer_state(opt);
  }
  void sum_state(std::span<float> x) override {
    if (inner_) inner_->sum_state(x);
  }
  // Alone (no inner sync) nothing reads a gradient before the backward ends.
  bool needs_zeroed_gradients() const override {
    return inner_ && inner_->needs_zeroed_gradients();
  }
  bool changed_weights_after_update() const override {
    return inner_ ? inner_->changed_weights_after_update() : edited_weights_;
  }
  bool end_step() override { return inner_ && inner_->end_step(); }
  bool replicas_identical() const override { return !inner_ || inner_->replicas_identical(); }
  uint64_t step_bytes_sent() const override { return inner_ ? inner_->step_bytes_sent() : 0; }
  void save_state(nlohmann::json& j, std::vector<io::NamedTensor>& tensors) override {
    if (inner_) inner_->save_state(j, tensors);
  }
  void load_state(const nlohmann::json& j, const io::SafetensorsFile* f) override {
    if (inner_) inner_->load_state(j, f);
  }

 private:
  train::ReplicaSync* inner_;
  FaultInjector* injector_;
  std::function<void(int64_t)> on_begin_;
  std::function<void(int64_t, train::AdamW&)> on_update_;
  std::function<void(int64_t, int)> on_phase_;
  int64_t step_ = 0;  // 1-based step in progress
  bool poisoned_ = false;
  bool edited_weights_ = false;  // the injector flipped a parameter after this step's update
};

}  // namespace keel::resilience
