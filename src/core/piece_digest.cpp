#include "core/piece_digest.h"

// XXH3 dispatched at run time to the widest vectors the CPU has.
#include <xxh_x86dispatch.h>

namespace keel {

uint64_t combine_piece_digests(const uint64_t* digests, size_t count) {
  return XXH3_64bits(digests, count * sizeof(uint64_t));
}

}  // namespace keel
