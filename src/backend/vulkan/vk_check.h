// VkResult checking: every Vulkan call's result goes through check(), which
// throws a keel::Error naming the call and the result code.
#pragma once
#include <vulkan/vulkan.h>

#include <string_view>

#include "core/error.h"

namespace keel::vulkan {

std::string_view result_name(VkResult r);

inline void check(VkResult r, std::string_view call) {
  if (r != VK_SUCCESS) fail("Vulkan: {} failed: {} ({})", call, result_name(r), int(r));
}

}  // namespace keel::vulkan
