// Sub-allocation of tensors from a few large device allocations: drivers limit
// the number of VkDeviceMemory objects (often 4096) and allocate slowly.
#include "backend/vulkan/vk_memory_pool.h"

#include <algorithm>

#include "backend/vulkan/vk_check.h"
#include "backend/vulkan/vk_context.h"

namespace keel::vulkan {

namespace {
constexpr VkBufferUsageFlags kUsage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT |
                                      VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
                                      VK_BUFFER_USAGE_TRANSFER_DST_BIT;
uint64_t round_up(uint64_t x, uint64_t a) {
  return (x + a - 1) / a * a;
}
}  // namespace

MemoryPool::MemoryPool(Context& ctx, uint64_t budget, uint64_t block_size)
    : ctx_(ctx), budget_(budget), block_size_(block_size) {
  // 256 bytes covers every device's storage-buffer offset alignment and keeps
  // tensors on cache-line boundaries.
  alignment_ = std::max<uint64_t>(256, ctx.limits().minStorageBufferOffsetAlignment);
}

MemoryPool::~MemoryPool() {
  for (auto& b : blocks_) {
    vkDestroyBuffer(ctx_.device(), b.buffer, nullptr);
    vkFreeMemory(ctx_.device(), b.memory, nullptr);
  }
}

void MemoryPool::add_block(uint64_t bytes) {
  const uint64_t left = budget_ - reserved_;
  const uint64_t size = std::min(std::max(block_size_, bytes), left);
  if (bytes > left)
    fail(
        "Vulkan: out of device memory on {}: requested {} bytes, pool budget {} bytes ({} held "
        "in {} allocations, {} in use)",
        ctx_.info().name, bytes, budget_, reserved_, blocks_.size(), in_use_);
  Block b;
  b.size = size;
  VkBufferCreateInfo bci{VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO};
  bci.size = size;
  bci.usage = kUsage;
  bci.sharingMode = VK_SHARING_MODE_EXCLUSIVE;
  check(vkCreateBuffer(ctx_.device(), &bci, nullptr, &b.buffer), "vkCreateBuffer");
  VkMemoryRequirements req;
  vkGetBufferMemoryRequirements(ctx_.device(), b.buffer, &req);
  VkPhysicalDeviceMemoryProperties mp;
  vkGetPhysicalDeviceMemoryProperties(ctx_.physical_device(), &mp);
  // Prefer device-local memory; any type the buffer accepts otherwise.
  int type = -1;
  for (uint32_t i = 0; i < mp.memoryTypeCount && type < 0; ++i)
    if ((req.memoryTypeBits >> i & 1) &&
        (mp.memoryTypes[i].propertyFlags & VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT))
      type = int(i);
  for (uint32_t i = 0; i < mp.memoryTypeCount && type < 0; ++i)
    if (req.memoryTypeBits >> i & 1) type = int(i);
  VkMemoryAllocateInfo ai{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
  ai.allocationSize = req.size;
  ai.memoryTypeIndex = uint32_t(type);
  const VkResult r = vkAllocateMemory(ctx_.device(), &ai, nullptr, &b.memory);
  if (r != VK_SUCCESS) {
    vkDestroyBuffer(ctx_.device(), b.buffer, nullptr);
    if (r == VK_ERROR_OUT_OF_DEVICE_MEMORY || r == VK_ERROR_OUT_OF_HOST_MEMORY)
      fail(
          "Vulkan: out of device memory on {}: requested {} bytes, the driver refused a {}-byte "
          "block (vkAllocateMemory: {}); pool budget {} bytes, {} held, {} in use",
          ctx_.info().name, bytes, req.size, result_name(r), budget_, reserved_, in_use_);
    check(r, "vkAllocateMemory");
  }
  const VkResult rb = vkBindBufferMemory(ctx_.device(), b.buffer, b.memory, 0);
  if (rb != VK_SUCCESS) {
    vkDestroyBuffer(ctx_.device(), b.buffer, nullptr);
    vkFreeMemory(ctx_.device(), b.memory, nullptr);
    check(rb, "vkBindBufferMemory");
  }
  b.free[0] = size;
  reserved_ += size;
  blocks_.push_back(std::move(b));
}

bool MemoryPool::take(uint32_t bi, uint64_t bytes, Buffer& out) {
  auto& fr = blocks_[bi].free;
  // First fit: lowest offset first, so reuse is predictable.
  for (auto it = fr.begin(); it != fr.end(); ++it) {
    if (it->second < bytes) continue;
    const uint64_t off = it->first, rest = it->second - bytes;
    fr.erase(it);
    if (rest) fr[off + bytes] = rest;
    out = Buffer{blocks_[bi].buffer, off, bytes, bi};
    in_use_ += bytes;
    return true;
  }
  return false;
}

Buffer MemoryPool::alloc(uint64_t bytes) {
  const uint64_t need = round_up(std::max<uint64_t>(bytes, 1), alignment_);
  Buffer out;
  for (uint32_t i = 0; i < blocks_.size(); ++i)
    if (take(i, need, out)) return out;
  add_block(need);
  if (!take(uint32_t(blocks_.size() - 1), need, out))
    fail("Vulkan: internal error: a fresh {}-byte block cannot hold {} bytes", blocks_.back().size,
         need);
  return out;
}

void MemoryPool::free(Buffer& b) {
  if (!b) return;
  auto& fr = blocks_.at(b.block).free;
  uint64_t off = b.offset, size = b.size;
  auto next = fr.lower_bound(off);
  if (next != fr.end() && off + size == next->first) {
    size += next->second;
    next = fr.erase(next);
  }
  if (next != fr.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second == off) {
      off = prev->first;
      size += prev->second;
      fr.erase(prev);
    }
  }
  fr[off] = size;
  in_use_ -= b.size;
  b = Buffer{};
}

}  // namespace keel::vulkan
