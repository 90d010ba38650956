// The ordered command stream of the Vulkan runtime: copies and dispatches are
// recorded into one command buffer with a barrier between dependent commands,
// submitted to the compute queue and waited on by synchronize().
#pragma once
#include <vulkan/vulkan.h>

#include <cstdint>
#include <initializer_list>

#include "backend/vulkan/vk_memory_pool.h"

namespace keel::vulkan {

class Context;
struct Pipeline;

class Stream {
 public:
  explicit Stream(Context& ctx);
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  // Records pipeline with `buffers` at bindings 0.. and push constants.
  void dispatch(const Pipeline& p, std::initializer_list<Buffer> buffers, const void* push,
                uint32_t gx, uint32_t gy = 1, uint32_t gz = 1);
  // Device-to-device copy of `bytes` (recorded, ordered after earlier work).
  void copy(const Buffer& src, const Buffer& dst, uint64_t bytes, uint64_t src_off = 0,
            uint64_t dst_off = 0);
  // Zeroes the range (recorded, ordered after earlier work).
  void fill_zero(const Buffer& b);
  // Host <-> device through host-visible staging. Both synchronize: upload so
  // the staging memory can be reused, download so the bytes are there.
  void upload(const Buffer& dst, const void* src, uint64_t bytes, uint64_t dst_off = 0);
  void download(const Buffer& src, void* dst, uint64_t bytes, uint64_t src_off = 0);
  // Submits what was recorded and waits for it (the explicit sync point).
  void synchronize();

  uint64_t submits() const { return submits_; }
  uint64_t staging_bytes() const { return staging_size_; }

 private:
  void begin();
  void barrier();
  void ensure_staging(uint64_t bytes);

  Context& ctx_;
  VkCommandPool pool_ = VK_NULL_HANDLE;
  VkCommandBuffer cmd_ = VK_NULL_HANDLE;
  VkFence fence_ = VK_NULL_HANDLE;
  bool recording_ = false, pending_ = false;
  uint64_t submits_ = 0;
  VkBuffer staging_ = VK_NULL_HANDLE;
  VkDeviceMemory staging_mem_ = VK_NULL_HANDLE;
  void* staging_map_ = nullptr;
  uint64_t staging_size_ = 0;
};

}  // namespace keel::vulkan
