#include "resilience/nan_policy.h"

namespace keel::resilience {

NanAction NanPolicy::observe(int64_t step, bool nonfinite) {
  if (!nonfinite) return NanAction::Continue;
  if (last_bad_ < 0 || step - last_bad_ > opt_.repeat_window) count_ = 0;
  last_bad_ = step;
  ++count_;
  if (count_ >= opt_.max_nonfinite) {
    reset();
    return NanAction::Rollback;
  }
  return NanAction::Skipped;
}

}  // namespace keel::resilience
