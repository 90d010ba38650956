#include "train/replica_sync.h"

#include "train/adamw.h"

namespace keel::train {

void ReplicaSync::optimizer_step(AdamW& opt, double lr, float grad_scale) {
  opt.step(lr, grad_scale);
}

}  // namespace keel::train
