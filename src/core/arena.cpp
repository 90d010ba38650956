#include "core/arena.h"

#include <algorithm>
#include <cstdlib>
#include <new>
#include <utility>

#include "core/error.h"
#include "core/host_memory.h"

namespace keel {

Arena::Arena(size_t chunk_bytes, ArenaMemory memory)
    : chunk_bytes_(chunk_bytes), memory_(std::move(memory)) {}

Arena::~Arena() {
  for (auto& c : chunks_) {
    if (memory_.release)
      memory_.release(c.data);
    else
      host_free(c.data, c.size);
  }
}

void* Arena::alloc(size_t bytes) {
  size_t need = (std::max<size_t>(bytes, 1) + 63) / 64 * 64;
  while (current_ < chunks_.size()) {
    Chunk& c = chunks_[current_];
    if (c.top + need <= c.size) {
      void* p = c.data + c.top;
      c.top += need;
      used_ += need;
      high_water_ = std::max(high_water_, used_);
      return p;
    }
    ++current_;
  }
  size_t size = std::max(chunk_bytes_, need);
  char* d = nullptr;
  try {
    d = static_cast<char*>(memory_.alloc ? memory_.alloc(size) : host_alloc(size));
  } catch (const std::bad_alloc&) {
  }
  if (!d) fail("arena: out of memory allocating a chunk of {} bytes", size);
  chunks_.push_back({d, size, 0});
  current_ = chunks_.size() - 1;
  return alloc(bytes);
}

void Arena::reset() {
  for (auto& c : chunks_) c.top = 0;
  current_ = 0;
  used_ = 0;
}

size_t Arena::capacity() const {
  size_t n = 0;
  for (auto& c : chunks_) n += c.size;
  return n;
}

}  // namespace keel
