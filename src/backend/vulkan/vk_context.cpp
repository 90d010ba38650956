// Instance, device choice and logical device for the Vulkan runtime.
#include "backend/vulkan/vk_context.h"

#include <fmt/format.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "backend/vulkan/vk_check.h"
#include "backend/vulkan/vk_memory_pool.h"
#include "backend/vulkan/vk_pipeline.h"
#include "backend/vulkan/vk_stream.h"

namespace keel::vulkan {

std::string_view result_name(VkResult r) {
  switch (r) {
    case VK_SUCCESS:
      return "VK_SUCCESS";
    case VK_NOT_READY:
      return "VK_NOT_READY";
    case VK_TIMEOUT:
      return "VK_TIMEOUT";
    case VK_INCOMPLETE:
      return "VK_INCOMPLETE";
    case VK_ERROR_OUT_OF_HOST_MEMORY:
      return "VK_ERROR_OUT_OF_HOST_MEMORY";
    case VK_ERROR_OUT_OF_DEVICE_MEMORY:
      return "VK_ERROR_OUT_OF_DEVICE_MEMORY";
    case VK_ERROR_INITIALIZATION_FAILED:
      return "VK_ERROR_INITIALIZATION_FAILED";
    case VK_ERROR_DEVICE_LOST:
      return "VK_ERROR_DEVICE_LOST";
    case VK_ERROR_MEMORY_MAP_FAILED:
      return "VK_ERROR_MEMORY_MAP_FAILED";
    case VK_ERROR_LAYER_NOT_PRESENT:
      return "VK_ERROR_LAYER_NOT_PRESENT";
    case VK_ERROR_EXTENSION_NOT_PRESENT:
      return "VK_ERROR_EXTENSION_NOT_PRESENT";
    case VK_ERROR_FEATURE_NOT_PRESENT:
      return "VK_ERROR_FEATURE_NOT_PRESENT";
    case VK_ERROR_INCOMPATIBLE_DRIVER:
      return "VK_ERROR_INCOMPATIBLE_DRIVER";
    case VK_ERROR_TOO_MANY_OBJECTS:
      return "VK_ERROR_TOO_MANY_OBJECTS";
    case VK_ERROR_FORMAT_NOT_SUPPORTED:
      return "VK_ERROR_FORMAT_NOT_SUPPORTED";
    case VK_ERROR_FRAGMENTED_POOL:
      return "VK_ERROR_FRAGMENTED_POOL";
    case VK_ERROR_OUT_OF_POOL_MEMORY:
      return "VK_ERROR_OUT_OF_POOL_MEMORY";
    default:
      return "VkResult";
  }
}

namespace {

std::atomic<uint64_t> g_validation_errors{0};
std::mutex g_validation_mu;
std::string g_validation_last;

VKAPI_ATTR VkBool32 VKAPI_CALL on_validation(VkDebugUtilsMessageSeverityFlagBitsEXT severity,
                                             VkDebugUtilsMessageTypeFlagsEXT,
                                             const VkDebugUtilsMessengerCallbackDataEXT* data,
                                             void*) {
  if (severity & VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT) {
    g_validation_errors.fetch_add(1);
    std::lock_guard<std::mutex> lock(g_validation_mu);
    g_validation_last = data && data->pMessage ? data->pMessage : "(no message)";
    fmt::print(stderr, "vulkan validation: {}\n", g_validation_last);
  }
  return VK_FALSE;
}

bool has_layer(const char* name) {
  uint32_t n = 0;
  vkEnumerateInstanceLayerProperties(&n, nullptr);
  std::vector<VkLayerProperties> layers(n);
  vkEnumerateInstanceLayerProperties(&n, layers.data());
  for (const auto& l : layers)
    if (std::strcmp(l.layerName, name) == 0) return true;
  return false;
}

VkInstance create_instance(bool validation) {
  VkApplicationInfo app{VK_STRUCTURE_TYPE_APPLICATION_INFO};
  app.pApplicationName = "keel";
  app.pEngineName = "keel";
  app.apiVersion = VK_API_VERSION_1_2;
  VkInstanceCreateInfo ci{VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO};
  ci.pApplicationInfo = &app;
  const char* layer = "VK_LAYER_KHRONOS_validation";
  const char* ext = VK_EXT_DEBUG_UTILS_EXTENSION_NAME;
  if (validation) {
    ci.enabledLayerCount = 1;
    ci.ppEnabledLayerNames = &layer;
    ci.enabledExtensionCount = 1;
    ci.ppEnabledExtensionNames = &ext;
  }
  VkInstance inst = VK_NULL_HANDLE;
  const VkResult r = vkCreateInstance(&ci, nullptr, &inst);
  if (r == VK_ERROR_INCOMPATIBLE_DRIVER)
    fail(
        "Vulkan: no driver found (vkCreateInstance: VK_ERROR_INCOMPATIBLE_DRIVER); for a CPU "
        "device install mesa-vulkan-drivers (lavapipe)");
  check(r, "vkCreateInstance");
  return inst;
}

std::vector<VkPhysicalDevice> physical_devices(VkInstance inst) {
  uint32_t n = 0;
  check(vkEnumeratePhysicalDevices(inst, &n, nullptr), "vkEnumeratePhysicalDevices");
  std::vector<VkPhysicalDevice> devs(n);
  check(vkEnumeratePhysicalDevices(inst, &n, devs.data()), "vkEnumeratePhysicalDevices");
  devs.resize(n);
  return devs;
}

const char* type_name(VkPhysicalDeviceType t) {
  switch (t) {
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU:
      return "integrated gpu";
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU:
      return "discrete gpu";
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU:
      return "virtual gpu";
    case VK_PHYSICAL_DEVICE_TYPE_CPU:
      return "cpu";
    default:
      return "other";
  }
}

DeviceInfo query(VkPhysicalDevice pd, uint32_t index) {
  DeviceInfo d;
  d.index = index;
  VkPhysicalDeviceSubgroupProperties sub{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES};
  VkPhysicalDeviceProperties2 p2{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2};
  p2.pNext = &sub;
  vkGetPhysicalDeviceProperties2(pd, &p2);
  d.name = p2.properties.deviceName;
  d.type = type_name(p2.properties.deviceType);
  d.api_version = p2.properties.apiVersion;
  d.subgroup_size = sub.subgroupSize;
  VkPhysicalDeviceMemoryProperties mem;
  vkGetPhysicalDeviceMemoryProperties(pd, &mem);
  for (uint32_t i = 0; i < mem.memoryHeapCount; ++i)
    d.heaps.push_back({mem.memoryHeaps[i].size,
                       (mem.memoryHeaps[i].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT) != 0});
  uint32_t n = 0;
  vkEnumerateDeviceExtensionProperties(pd, nullptr, &n, nullptr);
  std::vector<VkExtensionProperties> exts(n);
  vkEnumerateDeviceExtensionProperties(pd, nullptr, &n, exts.data());
  for (const auto& e : exts) {
    if (std::strcmp(e.extensionName, "VK_KHR_cooperative_matrix") == 0) d.cooperative_matrix = true;
    if (std::strcmp(e.extensionName, VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME) == 0)
      d.push_descriptor = true;
  }
  VkPhysicalDevice8BitStorageFeatures s8{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_8BIT_STORAGE_FEATURES};
  VkPhysicalDevice16BitStorageFeatures s16{
      VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES};
  s16.pNext = &s8;
  VkPhysicalDeviceFeatures2 f2{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2};
  f2.pNext = &s16;
  vkGetPhysicalDeviceFeatures2(pd, &f2);
  d.storage_16bit = s16.storageBuffer16BitAccess == VK_TRUE;
  d.storage_8bit = s8.storageBuffer8BitAccess == VK_TRUE;
  d.float64 = f2.features.shaderFloat64 == VK_TRUE;
  return d;
}

std::string list_text(const std::vector<DeviceInfo>& devs) {
  std::string s;
  for (const auto& d : devs) s += "\n  " + describe_device(d);
  return s;
}

}  // namespace

uint64_t validation_errors() {
  return g_validation_errors.load();
}
std::string last_validation_message() {
  std::lock_guard<std::mutex> lock(g_validation_mu);
  return g_validation_last;
}

std::string describe_device(const DeviceInfo& d) {
  std::string heaps;
  for (const auto& h : d.heaps)
    heaps += fmt::format("{}{:.1f} GiB{}", heaps.empty() ? "" : " + ", double(h.size) / (1 << 30),
                         h.device_local ? " device-local" : "");
  return fmt::format(
      "{}: {} [{}], Vulkan {}.{}.{}, subgroup {}, heaps {}, cooperative_matrix {}, float64 {}, "
      "8-bit storage {}",
      d.index, d.name, d.type, VK_API_VERSION_MAJOR(d.api_version),
      VK_API_VERSION_MINOR(d.api_version), VK_API_VERSION_PATCH(d.api_version), d.subgroup_size,
      heaps, d.cooperative_matrix ? "yes" : "no", d.float64 ? "yes" : "no",
      d.storage_8bit ? "yes" : "no");
}

std::vector<DeviceInfo> list_devices() {
  VkInstance inst = create_instance(false);
  std::vector<DeviceInfo> out;
  try {
    const auto devs = physical_devices(inst);
    for (uint32_t i = 0; i < devs.size(); ++i) out.push_back(query(devs[i], i));
  } catch (...) {
    vkDestroyInstance(inst, nullptr);
    throw;
  }
  vkDestroyInstance(inst, nullptr);
  if (out.empty())
    fail(
        "Vulkan: the loader found a driver but no devices; for a CPU device install "
        "mesa-vulkan-drivers (lavapipe)");
  return out;
}

Context::Context(const ContextOptions& opt) {
  const char* env_val = std::getenv("KEEL_VULKAN_VALIDATION");
  const bool want_validation = opt.validation || (env_val && std::string(env_val) == "1");
  const bool validation = want_validation && has_layer("VK_LAYER_KHRONOS_validation");
  instance_ = create_instance(validation);
  try {
    if (validation) {
      VkDebugUtilsMessengerCreateInfoEXT mi{
          VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT};
      mi.messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT |
                           VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT;
      mi.messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT |
                       VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT;
      mi.pfnUserCallback = on_validation;
      auto create = reinterpret_cast<PFN_vkCreateDebugUtilsMessengerEXT>(
          vkGetInstanceProcAddr(instance_, "vkCreateDebugUtilsMessengerEXT"));
      if (!create) fail("Vulkan: vkCreateDebugUtilsMessengerEXT is missing with validation on");
      check(create(instance_, &mi, nullptr, &messenger_), "vkCreateDebugUtilsMessengerEXT");
    }
    const auto devs = physical_devices(instance_);
    std::vector<DeviceInfo> infos;
    for (uint32_t i = 0; i < devs.size(); ++i) infos.push_back(query(devs[i], i));
    if (devs.empty())
      fail(
          "Vulkan: the loader found a driver but no devices; for a CPU device install "
          "mesa-vulkan-drivers (lavapipe)");

    // KEEL_VULKAN_DEVICE: an index, or a substring of the device name.
    uint32_t pick = 0;
    if (const char* sel = std::getenv("KEEL_VULKAN_DEVICE"); sel && *sel) {
      const std::string s(sel);
      bool found = false;
      if (s.find_first_not_of("0123456789") == std::string::npos) {
        pick = uint32_t(std::stoul(s));
        found = pick < devs.size();
      } else {
        for (const auto& d : infos)
          if (d.name.find(s) != std::string::npos) {
            pick = d.index;
            found = true;
            break;
          }
      }
      if (!found)
        fail("Vulkan: KEEL_VULKAN_DEVICE='{}' matches no device; devices:{}", s, list_text(infos));
    }
    physical_ = devs[pick];
    info_ = infos[pick];
    if (!info_.push_descriptor || !info_.storage_16bit)
      fail(
          "Vulkan: device {} lacks {} (the runtime needs VK_KHR_push_descriptor and 16-bit "
          "storage buffers); devices:{}",
          info_.name, !info_.push_descriptor ? "VK_KHR_push_descriptor" : "16-bit storage",
          list_text(infos));
    VkPhysicalDeviceProperties props;
    vkGetPhysicalDeviceProperties(physical_, &props);
    limits_ = props.limits;

    uint32_t nq = 0;
    vkGetPhysicalDeviceQueueFamilyProperties(physical_, &nq, nullptr);
    std::vector<VkQueueFamilyProperties> qf(nq);
    vkGetPhysicalDeviceQueueFamilyProperties(physical_, &nq, qf.data());
    bool have_queue = false;
    for (uint32_t i = 0; i < nq && !have_queue; ++i)
      if (qf[i].queueFlags & VK_QUEUE_COMPUTE_BIT) {
        queue_family_ = i;
        have_queue = true;
      }
    if (!have_queue) fail("Vulkan: device {} has no compute queue", info_.name);

    const float prio = 1.f;
    VkDeviceQueueCreateInfo qci{VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO};
    qci.queueFamilyIndex = queue_family_;
    qci.queueCount = 1;
    qci.pQueuePriorities = &prio;
    VkPhysicalDevice16BitStorageFeatures s16{
        VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES};
    s16.storageBuffer16BitAccess = VK_TRUE;
    VkPhysicalDevice8BitStorageFeatures s8{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_8BIT_STORAGE_FEATURES};
    s8.storageBuffer8BitAccess = info_.storage_8bit ? VK_TRUE : VK_FALSE;
    s16.pNext = &s8;
    VkPhysicalDeviceFeatures2 f2{VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2};
    f2.pNext = &s16;
    f2.features.shaderFloat64 = info_.float64 ? VK_TRUE : VK_FALSE;
    const char* ext = VK_KHR_PUSH_DESCRIPTOR_EXTENSION_NAME;
    VkDeviceCreateInfo dci{VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO};
    dci.pNext = &f2;
    dci.queueCreateInfoCount = 1;
    dci.pQueueCreateInfos = &qci;
    dci.enabledExtensionCount = 1;
    dci.ppEnabledExtensionNames = &ext;
    check(vkCreateDevice(physical_, &dci, nullptr, &device_), "vkCreateDevice");
    vkGetDeviceQueue(device_, queue_family_, 0, &queue_);
    push_descriptor_ = reinterpret_cast<PFN_vkCmdPushDescriptorSetKHR>(
        vkGetDeviceProcAddr(device_, "vkCmdPushDescriptorSetKHR"));
    if (!push_descriptor_) fail("Vulkan: vkCmdPushDescriptorSetKHR not found on {}", info_.name);

    uint64_t budget = opt.pool_budget;
    if (budget == 0)
      for (const auto& h : info_.heaps)
        if (h.device_local && h.size > budget) budget = h.size;
    pool_ = std::make_unique<MemoryPool>(*this, budget, opt.pool_block);
    pipelines_ = std::make_unique<PipelineCache>(*this);
    stream_ = std::make_unique<Stream>(*this);
  } catch (...) {
    teardown();
    throw;
  }
}

Context::~Context() {
  teardown();
}

void Context::teardown() {
  if (device_ != VK_NULL_HANDLE) vkDeviceWaitIdle(device_);
  stream_.reset();
  pipelines_.reset();
  pool_.reset();
  if (device_ != VK_NULL_HANDLE) vkDestroyDevice(device_, nullptr);
  device_ = VK_NULL_HANDLE;
  if (messenger_ != VK_NULL_HANDLE) {
    auto destroy = reinterpret_cast<PFN_vkDestroyDebugUtilsMessengerEXT>(
        vkGetInstanceProcAddr(instance_, "vkDestroyDebugUtilsMessengerEXT"));
    if (destroy) destroy(instance_, messenger_, nullptr);
    messenger_ = VK_NULL_HANDLE;
  }
  if (instance_ != VK_NULL_HANDLE) vkDestroyInstance(instance_, nullptr);
  instance_ = VK_NULL_HANDLE;
}

}  // namespace keel::vulkan
