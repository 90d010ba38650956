// Arena: a bump allocator for one training step's activations. Everything is
// released at once by reset(), so a step allocates with no malloc traffic and
// peak activation memory is a single number (high_water()).
#pragma once
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace keel {

// Where an arena's chunks come from: the host heap (the default), or a
// device's memory, whose addresses the host never dereferences.
struct ArenaMemory {
  std::function<void*(size_t)> alloc;  // 64-byte aligned; throws when out of memory
  std::function<void(void*)> release;
  std::string device;  // the device's name; empty for the host heap
};

class Arena {
 public:
  // Grows in chunks of at least chunk_bytes; pointers stay valid until reset().
  explicit Arena(size_t chunk_bytes = size_t(64) << 20, ArenaMemory memory = {});
  ~Arena();
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;

  // 64-byte aligned, uninitialised.
  void* alloc(size_t bytes);
  // Frees every allocation; keeps the memory for the next step.
  void reset();
  size_t used() const { return used_; }
  size_t high_water() const { return high_water_; }
  size_t capacity() const;
  // The device the chunks live on; empty when they are host memory.
  const std::string& device() const { return memory_.device; }

 private:
  struct Chunk {
    char* data;
    size_t size;
    size_t top;
  };
  std::vector<Chunk> chunks_;
  size_t current_ = 0;
  size_t chunk_bytes_;
  ArenaMemory memory_;
  size_t used_ = 0;
  size_t high_water_ = 0;
};

}  // namespace keel
