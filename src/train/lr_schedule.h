// The learning-rate schedule: linear warmup to lr, then a cosine decay to
// min_lr at the last step. A pure function of the step, so it needs no state
// of its own in a checkpoint beyond the config.
#pragma once
#include <cstdint>

namespace keel::train {

struct LrSchedule {
  double lr = 1e-3;   // peak, reached at the end of warmup
  double min_lr = 0;  // reached at step total_steps - 1
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;

  // Rate for 0-based optimizer step `step`:
  //   step < warmup:  lr * (step + 1) / warmup
  //   afterwards:     min_lr + (lr - min_lr) * (1 + cos(pi * p)) / 2,
  //                   p = (step - warmup) / max(1, total - 1 - warmup), clamped to [0, 1].
  double at(int64_t step) const;
};

}  // namespace keel::train
