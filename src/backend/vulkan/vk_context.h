// The Vulkan runtime's root: instance, the chosen physical device (env
// KEEL_VULKAN_DEVICE = index or name substring), a logical device with one
// compute queue, and the pool, stream and pipeline cache that live on it.
#pragma once
#include <vulkan/vulkan.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace keel::vulkan {

class MemoryPool;
class Stream;
class PipelineCache;

struct MemoryHeapInfo {
  uint64_t size = 0;
  bool device_local = false;
};

// What `keel info` and error messages say about one physical device.
struct DeviceInfo {
  uint32_t index = 0;
  std::string name, type;
  uint32_t api_version = 0;
  std::vector<MemoryHeapInfo> heaps;
  uint32_t subgroup_size = 0;
  bool cooperative_matrix = false;  // VK_KHR_cooperative_matrix offered
  bool push_descriptor = false;     // VK_KHR_push_descriptor (required by the runtime)
  bool storage_16bit = false;       // 16-bit storage buffer access (bf16 kernels)
  bool float64 = false;             // shaderFloat64 (f64 sums: sum_squares)
  bool storage_8bit = false;        // 8-bit storage buffer access (quantized blocks)
};

// Every Vulkan device the loader reports. Throws keel::Error when there is no
// loader/driver or no device, saying what was found.
std::vector<DeviceInfo> list_devices();
// One line: "0: llvmpipe (...) [cpu], Vulkan 1.3.230, subgroup 8, heaps ..."
std::string describe_device(const DeviceInfo& d);

struct ContextOptions {
  // Bytes the memory pool may take from the device; 0 = the largest
  // device-local heap.
  uint64_t pool_budget = 0;
  // Size of one driver allocation the pool sub-allocates from.
  uint64_t pool_block = 64ull << 20;
  // Enable VK_LAYER_KHRONOS_validation when installed (also env
  // KEEL_VULKAN_VALIDATION=1); its errors are counted, see validation_errors().
  bool validation = false;
};

class Context {
 public:
  explicit Context(const ContextOptions& opt = {});
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  VkDevice device() const { return device_; }
  VkPhysicalDevice physical_device() const { return physical_; }
  VkQueue queue() const { return queue_; }
  uint32_t queue_family() const { return queue_family_; }
  const DeviceInfo& info() const { return info_; }
  const VkPhysicalDeviceLimits& limits() const { return limits_; }
  bool validation_enabled() const { return messenger_ != VK_NULL_HANDLE; }
  PFN_vkCmdPushDescriptorSetKHR push_descriptor_fn() const { return push_descriptor_; }

  MemoryPool& pool() { return *pool_; }
  Stream& stream() { return *stream_; }
  PipelineCache& pipelines() { return *pipelines_; }

 private:
  void teardown();

  VkInstance instance_ = VK_NULL_HANDLE;
  VkDebugUtilsMessengerEXT messenger_ = VK_NULL_HANDLE;
  VkPhysicalDevice physical_ = VK_NULL_HANDLE;
  VkDevice device_ = VK_NULL_HANDLE;
  VkQueue queue_ = VK_NULL_HANDLE;
  uint32_t queue_family_ = 0;
  DeviceInfo info_;
  VkPhysicalDeviceLimits limits_{};
  PFN_vkCmdPushDescriptorSetKHR push_descriptor_ = nullptr;
  // Destroyed before the device, in reverse order of creation.
  std::unique_ptr<MemoryPool> pool_;
  std::unique_ptr<PipelineCache> pipelines_;
  std::unique_ptr<Stream> stream_;
};

// Validation-layer errors seen by any Context since the process started
// (counted even during teardown, so a test can check after destruction).
uint64_t validation_errors();
std::string last_validation_message();

}  // namespace keel::vulkan
