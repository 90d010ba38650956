// Host memory for tensors, arenas and caches. Buffers of 8 MiB and more are
// anonymous mappings in 2 MiB pages where the kernel offers them: their first
// touch then takes a page fault per 2 MiB, not per 4 KiB (on a virtual
// machine a 4 KiB fault costs ~35 us, so a fresh 76 MB buffer cost 650 ms).
#pragma once

#include <cstddef>

namespace keel {

// From this size on, buffers are mapped in 2 MiB pages by default. Smaller
// ones come from the heap: rounded up to huge pages they would waste much of
// each. A caller that fills a buffer at once and drops it soon (a file read)
// may pass a lower bound, as low as 2 MiB.
inline constexpr size_t kHostMappedMin = size_t(8) << 20;

// 64-byte aligned, uninitialised; throws std::bad_alloc when out of memory.
void* host_alloc(size_t bytes, size_t mapped_min = kHostMappedMin);
// Frees what host_alloc(bytes, mapped_min) returned (the same arguments; null
// is ignored).
void host_free(void* p, size_t bytes, size_t mapped_min = kHostMappedMin);

}  // namespace keel
