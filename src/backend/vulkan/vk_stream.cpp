// Recording, barriers, submission and staging for the Vulkan command stream.
#include "backend/vulkan/vk_stream.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "backend/vulkan/vk_check.h"
#include "backend/vulkan/vk_context.h"
#include "backend/vulkan/vk_pipeline.h"

namespace keel::vulkan {

namespace {
// Transfers larger than this go through staging in pieces.
constexpr uint64_t kMaxStaging = 64ull << 20;
// vkCmdUpdateBuffer's limit on data carried in a command buffer.
constexpr uint64_t kMaxInlineUpload = 65536;
}  // namespace

Stream::Stream(Context& ctx) : ctx_(ctx) {
  VkCommandPoolCreateInfo pci{VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO};
  pci.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
  pci.queueFamilyIndex = ctx.queue_family();
  check(vkCreateCommandPool(ctx.device(), &pci, nullptr, &pool_), "vkCreateCommandPool");
  VkCommandBufferAllocateInfo ai{VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO};
  ai.commandPool = pool_;
  ai.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
  ai.commandBufferCount = 1;
  VkFenceCreateInfo fci{VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
  try {
    check(vkAllocateCommandBuffers(ctx.device(), &ai, &cmd_), "vkAllocateCommandBuffers");
    check(vkCreateFence(ctx.device(), &fci, nullptr, &fence_), "vkCreateFence");
  } catch (...) {
    vkDestroyCommandPool(ctx.device(), pool_, nullptr);
    throw;
  }
}

Stream::~Stream() {
  VkDevice dev = ctx_.device();
  if (recording_) vkEndCommandBuffer(cmd_);
  if (staging_map_) vkUnmapMemory(dev, staging_mem_);
  if (staging_) vkDestroyBuffer(dev, staging_, nullptr);
  if (staging_mem_) vkFreeMemory(dev, staging_mem_, nullptr);
  if (fence_) vkDestroyFence(dev, fence_, nullptr);
  if (pool_) vkDestroyCommandPool(dev, pool_, nullptr);
}

void Stream::begin() {
  if (recording_) return;
  VkCommandBufferBeginInfo bi{VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO};
  bi.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
  check(vkBeginCommandBuffer(cmd_, &bi), "vkBeginCommandBuffer");
  recording_ = true;
  pending_ = false;
}

// Every recorded command may read what an earlier one wrote, so a full
// compute/transfer memory barrier separates consecutive commands. Tracking
// per-buffer hazards could drop some barriers later; this is always correct.
void Stream::barrier() {
  if (!pending_) return;
  VkMemoryBarrier mb{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
  mb.srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT;
  mb.dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT |
                     VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT;
  const VkPipelineStageFlags stages =
      VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT;
  vkCmdPipelineBarrier(cmd_, stages, stages, 0, 1, &mb, 0, nullptr, 0, nullptr);
}

void Stream::dispatch(const Pipeline& p, std::initializer_list<Buffer> buffers, const void* push,
                      uint32_t gx, uint32_t gy, uint32_t gz) {
  if (buffers.size() != p.bindings)
    fail("Vulkan: dispatch with {} buffers for a pipeline with {} bindings", buffers.size(),
         p.bindings);
  begin();
  barrier();
  vkCmdBindPipeline(cmd_, VK_PIPELINE_BIND_POINT_COMPUTE, p.pipeline);
  std::vector<VkDescriptorBufferInfo> infos;
  std::vector<VkWriteDescriptorSet> writes;
  infos.reserve(buffers.size());
  for (const Buffer& b : buffers) infos.push_back({b.buffer, b.offset, b.size});
  for (uint32_t i = 0; i < infos.size(); ++i) {
    VkWriteDescriptorSet w{VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET};
    w.dstBinding = i;
    w.descriptorCount = 1;
    w.descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
    w.pBufferInfo = &infos[i];
    writes.push_back(w);
  }
  ctx_.push_descriptor_fn()(cmd_, VK_PIPELINE_BIND_POINT_COMPUTE, p.layout, 0,
                            uint32_t(writes.size()), writes.data());
  if (p.push_bytes)
    vkCmdPushConstants(cmd_, p.layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, p.push_bytes, push);
  if (gx && gy && gz) vkCmdDispatch(cmd_, gx, gy, gz);
  pending_ = true;
}

void Stream::copy(const Buffer& src, const Buffer& dst, uint64_t bytes, uint64_t src_off,
                  uint64_t dst_off) {
  if (src_off + bytes > src.size || dst_off + bytes > dst.size)
    fail("Vulkan: copy of {} bytes out of range (source {} of {} bytes, destination {} of {})",
         bytes, src_off, src.size, dst_off, dst.size);
  if (!bytes) return;
  begin();
  barrier();
  VkBufferCopy r{src.offset + src_off, dst.offset + dst_off, bytes};
  vkCmdCopyBuffer(cmd_, src.buffer, dst.buffer, 1, &r);
  pending_ = true;
}

void Stream::fill_zero(const Buffer& b) {
  if (!b.size) return;
  begin();
  barrier();
  // vkCmdFillBuffer writes whole 4-byte words; pool ranges are 256-aligned.
  vkCmdFillBuffer(cmd_, b.buffer, b.offset, (b.size + 3) / 4 * 4, 0);
  pending_ = true;
}

void Stream::synchronize() {
  if (!recording_) return;
  check(vkEndCommandBuffer(cmd_), "vkEndCommandBuffer");
  recording_ = false;
  VkSubmitInfo si{VK_STRUCTURE_TYPE_SUBMIT_INFO};
  si.commandBufferCount = 1;
  si.pCommandBuffers = &cmd_;
  check(vkQueueSubmit(ctx_.queue(), 1, &si, fence_), "vkQueueSubmit");
  ++submits_;
  check(vkWaitForFences(ctx_.device(), 1, &fence_, VK_TRUE, UINT64_MAX), "vkWaitForFences");
  check(vkResetFences(ctx_.device(), 1, &fence_), "vkResetFences");
  check(vkResetCommandBuffer(cmd_, 0), "vkResetCommandBuffer");
}

void Stream::ensure_staging(uint64_t bytes) {
  if (staging_size_ >= bytes) return;
  VkDevice dev = ctx_.device();
  if (staging_map_) vkUnmapMemory(dev, staging_mem_);
  if (staging_) vkDestroyBuffer(dev, staging_, nullptr);
  if (staging_mem_) vkFreeMemory(dev, staging_mem_, nullptr);
  staging_map_ = nullptr;
  staging_ = VK_NULL_HANDLE;
  staging_mem_ = VK_NULL_HANDLE;
  staging_size_ = 0;
  VkBufferCreateInfo bci{VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO};
  bci.size = bytes;
  bci.usage = VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT;
  check(vkCreateBuffer(dev, &bci, nullptr, &staging_), "vkCreateBuffer(staging)");
  VkMemoryRequirements req;
  vkGetBufferMemoryRequirements(dev, staging_, &req);
  VkPhysicalDeviceMemoryProperties mp;
  vkGetPhysicalDeviceMemoryProperties(ctx_.physical_device(), &mp);
  const VkMemoryPropertyFlags want =
      VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
  int type = -1;
  for (uint32_t i = 0; i < mp.memoryTypeCount && type < 0; ++i)
    if ((req.memoryTypeBits >> i & 1) && (mp.memoryTypes[i].propertyFlags & want) == want)
      type = int(i);
  if (type < 0)
    fail("Vulkan: {} has no host-visible coherent memory for staging", ctx_.info().name);
  VkMemoryAllocateInfo ai{VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO};
  ai.allocationSize = req.size;
  ai.memoryTypeIndex = uint32_t(type);
  check(vkAllocateMemory(dev, &ai, nullptr, &staging_mem_), "vkAllocateMemory(staging)");
  check(vkBindBufferMemory(dev, staging_, staging_mem_, 0), "vkBindBufferMemory(staging)");
  check(vkMapMemory(dev, staging_mem_, 0, VK_WHOLE_SIZE, 0, &staging_map_), "vkMapMemory(staging)");
  staging_size_ = bytes;
}

void Stream::upload(const Buffer& dst, const void* src, uint64_t bytes, uint64_t dst_off) {
  if (dst_off + bytes > dst.size)
    fail("Vulkan: upload of {} bytes at {} overruns a {}-byte buffer", bytes, dst_off, dst.size);
  // Small aligned uploads (token ids, positions, a loss gradient) ride in the
  // command buffer itself, so they cost no host wait.
  if (bytes <= kMaxInlineUpload && bytes % 4 == 0 && (dst.offset + dst_off) % 4 == 0) {
    if (!bytes) return;
    begin();
    barrier();
    vkCmdUpdateBuffer(cmd_, dst.buffer, dst.offset + dst_off, bytes, src);
    pending_ = true;
    return;
  }
  // Earlier recorded work may still read the staging memory's last contents.
  synchronize();
  ensure_staging(std::min(bytes, kMaxStaging));
  const auto* p = static_cast<const uint8_t*>(src);
  for (uint64_t done = 0; done < bytes;) {
    const uint64_t n = std::min(bytes - done, staging_size_);
    std::memcpy(staging_map_, p + done, n);
    begin();
    barrier();
    VkBufferCopy r{0, dst.offset + dst_off + done, n};
    vkCmdCopyBuffer(cmd_, staging_, dst.buffer, 1, &r);
    pending_ = true;
    synchronize();
    done += n;
  }
}

void Stream::download(const Buffer& src, void* dst, uint64_t bytes, uint64_t src_off) {
  if (src_off + bytes > src.size)
    fail("Vulkan: download of {} bytes at {} overruns a {}-byte buffer", bytes, src_off, src.size);
  ensure_staging(std::min(bytes, kMaxStaging));
  auto* p = static_cast<uint8_t*>(dst);
  for (uint64_t done = 0; done < bytes;) {
    const uint64_t n = std::min(bytes - done, staging_size_);
    begin();
    barrier();
    VkBufferCopy r{src.offset + src_off + done, 0, n};
    vkCmdCopyBuffer(cmd_, src.buffer, staging_, 1, &r);
    // Make the copy's writes visible to host reads after the fence.
    VkMemoryBarrier mb{VK_STRUCTURE_TYPE_MEMORY_BARRIER};
    mb.srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT;
    mb.dstAccessMask = VK_ACCESS_HOST_READ_BIT;
    vkCmdPipelineBarrier(cmd_, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_PIPELINE_STAGE_HOST_BIT, 0, 1,
                         &mb, 0, nullptr, 0, nullptr);
    pending_ = true;
    synchronize();
    std::memcpy(p + done, staging_map_, n);
    done += n;
  }
}

}  // namespace keel::vulkan
