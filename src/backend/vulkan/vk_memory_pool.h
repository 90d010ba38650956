// Device memory for the Vulkan runtime: a few large VkDeviceMemory blocks,
// each bound to one VkBuffer, from which tensors are sub-allocated as
// (buffer handle, offset, size) with alignment, free and reuse.
#pragma once
#include <vulkan/vulkan.h>

#include <cstdint>
#include <map>
#include <vector>

namespace keel::vulkan {

class Context;

// A region of device memory: what kernels bind and the coming backend
// interface passes instead of a host pointer.
struct Buffer {
  VkBuffer buffer = VK_NULL_HANDLE;
  VkDeviceSize offset = 0, size = 0;
  uint32_t block = 0;
  explicit operator bool() const { return buffer != VK_NULL_HANDLE; }
};

class MemoryPool {
 public:
  MemoryPool(Context& ctx, uint64_t budget, uint64_t block_size);
  ~MemoryPool();
  MemoryPool(const MemoryPool&) = delete;
  MemoryPool& operator=(const MemoryPool&) = delete;

  // Throws keel::Error naming the requested size and the budget when the
  // pool cannot hold it; never returns an empty buffer.
  Buffer alloc(uint64_t bytes);
  // Returns the range for reuse (adjacent free ranges merge); b becomes empty.
  void free(Buffer& b);

  uint64_t budget() const { return budget_; }
  uint64_t reserved() const { return reserved_; }  // bytes held from the driver
  uint64_t in_use() const { return in_use_; }
  uint64_t alignment() const { return alignment_; }
  size_t driver_allocations() const { return blocks_.size(); }

 private:
  struct Block {
    VkDeviceMemory memory = VK_NULL_HANDLE;
    VkBuffer buffer = VK_NULL_HANDLE;
    uint64_t size = 0;
    std::map<uint64_t, uint64_t> free;  // offset -> size, disjoint, not adjacent
  };
  bool take(uint32_t block, uint64_t bytes, Buffer& out);
  void add_block(uint64_t bytes);

  Context& ctx_;
  uint64_t budget_, block_size_, alignment_;
  uint64_t reserved_ = 0, in_use_ = 0;
  uint32_t memory_type_ = 0;
  std::vector<Block> blocks_;
};

}  // namespace keel::vulkan
