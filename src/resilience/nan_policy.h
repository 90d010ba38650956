// What to do about a step whose loss or gradient norm is NaN/Inf: the trainer
// already skips that update (the step still counts, so data order holds); a
// repeat within a few steps means the state itself is bad, so the run rolls
// back to the last checkpoint instead of skipping forever.
#pragma once
#include <cstdint>

namespace keel::resilience {

enum class NanAction { Continue, Skipped, Rollback };

struct NanPolicyOptions {
  // Non-finite steps within `repeat_window` consecutive steps that trigger a
  // rollback (the first only skips its update).
  int64_t max_nonfinite = 2;
  int64_t repeat_window = 10;
};

class NanPolicy {
 public:
  explicit NanPolicy(NanPolicyOptions opt = {}) : opt_(opt) {}
  // step: 1-based; nonfinite: the step's loss or grad norm was not finite.
  NanAction observe(int64_t step, bool nonfinite);
  // Forgets the history (after a rollback or resume).
  void reset() { count_ = 0, last_bad_ = -1; }

 private:
  NanPolicyOptions opt_;
  int64_t count_ = 0;      // non-finite steps in the current streak window
  int64_t last_bad_ = -1;  // step of the last non-finite step
};

}  // namespace keel::resilience
