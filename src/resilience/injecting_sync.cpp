#include "resilience/injecting_sync.h"

#include <limits>

#include "resilience/heartbeat.h"
#include "train/adamw.h"

namespace keel::resilience {

void InjectingSync::begin_step(int64_t step) {
  step_ = step + 1;  // the trainer passes the 0-based index
  poisoned_ = false;
  if (on_begin_) on_begin_(step_);
  if (inner_) inner_->begin_step(step);
}

void InjectingSync::finish_gradients(const std::vector<nn::Parameter*>& params) {
  poisoned_ = injector_->after_backward(step_, params);
  // Entering the exchange: a rank stuck before this point is the one the
  // others wait for.
  if (on_phase_) on_phase_(step_, kPhaseExchanging);
  if (inner_) inner_->finish_gradients(params);
  if (on_phase_) on_phase_(step_, kPhaseExchanged);
}

double InjectingSync::mean(double x) {
  if (poisoned_) x = std::numeric_limits<double>::quiet_NaN();
  return inner_ ? inner_->mean(x) : x;
}

void InjectingSync::optimizer_step(train::AdamW& opt, double lr, float grad_scale) {
  if (inner_)
    inner_->optimizer_step(opt, lr, grad_scale);
  else
    opt.step(lr, grad_scale);
  if (on_update_) on_update_(step_, opt);
  edited_weights_ = injector_->after_update(step_, opt.params(), &opt);
}

}  // namespace keel::resilience
