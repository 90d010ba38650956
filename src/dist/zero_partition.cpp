// ZeRO-1 partition by closest prefix sums.
#include "dist/zero_partition.h"

#include "core/error.h"

namespace keel::dist {

std::vector<size_t> zero_partition(const std::vector<int64_t>& numels, int world) {
  if (world < 1) fail<DistError>("zero_partition: world size {} < 1", world);
  const size_t n = numels.size();
  std::vector<int64_t> prefix(n + 1, 0);
  for (size_t i = 0; i < n; ++i) {
    if (numels[i] < 0)
      fail<DistError>("zero_partition: parameter {} has {} elements", i, numels[i]);
    prefix[i + 1] = prefix[i] + numels[i];
  }
  const long double total = (long double)prefix[n];
  std::vector<size_t> b(size_t(world) + 1, 0);
  b[size_t(world)] = n;
  size_t i = 0;
  for (int r = 1; r < world; ++r) {
    const long double target = total * (long double)r / (long double)world;
    // Advance while the next boundary is strictly closer to the target.
    while (i < n && (long double)prefix[i + 1] - target < target - (long double)prefix[i] &&
           (long double)prefix[i] < target)
      ++i;
    b[size_t(r)] = i;
  }
  return b;
}

}  // namespace keel::dist
