// ZeRO-1 partition: which parameters' optimizer state each rank owns. Whole
// parameters in contiguous runs of the parameter order, balanced by element
// count, so each owned update is exactly the unsharded AdamW's call.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace keel::dist {

// Boundaries b[0] = 0 <= b[1] <= ... <= b[world] = numels.size(): rank r owns
// parameters [b[r], b[r + 1]). Boundary r is the parameter boundary whose
// prefix element count is closest to r * total / world (ties: the earlier),
// kept monotonic; a rank may own nothing when one parameter outweighs a share.
// A pure function of (numels, world): every rank computes the same.
std::vector<size_t> zero_partition(const std::vector<int64_t>& numels, int world);

}  // namespace keel::dist
