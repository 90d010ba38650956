// Host memory for tensors, arenas and caches. Buffers of 8 MiB and more are
// anonymous mappings in 2 MiB pages where the kernel offers them: their first
// touch then takes a page fault per 2 MiB, not per 4 KiB (on a virtual
// machine a 4 KiB fault costs ~35 us, so a fresh 76 MB buffer cost 650 ms).
#pragma once

#include <cstddef>

namespace keel {

// 64-byte aligned, uninitialised; throws std::bad_alloc when out of memory.
void* host_alloc(size_t bytes);
// Frees what host_alloc(bytes) returned (the same bytes; null is ignored).
void host_free(void* p, size_t bytes);

}  // namespace keel
