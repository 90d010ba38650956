// The blocking allreduce shared by every communicator: start, wait, copy back.
#include "dist/communicator.h"

#include <algorithm>

#include "core/error.h"

namespace keel::dist {

void Communicator::allreduce_sum(std::span<float> data) {
  std::unique_ptr<PendingSum> p = start_allreduce_sum(std::vector<float>(data.begin(), data.end()));
  p->wait();
  const std::span<const float> r = p->result();
  KEEL_ASSERT(r.size() == data.size());
  std::copy(r.begin(), r.end(), data.begin());
}

}  // namespace keel::dist
