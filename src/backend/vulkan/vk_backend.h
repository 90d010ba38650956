// The `vulkan` backend: backend.h's interface over the Vulkan runtime
// (vk_context, vk_memory_pool, vk_stream, shaders/). Its memory is the
// device's; every kernel family runs in f32 and bf16 (f16: unsupported).
#pragma once
#include <memory>

#include "backend/backend.h"

namespace keel::backend {

// Opens the device chosen by KEEL_VULKAN_DEVICE (index or name substring;
// default: the first). Throws keel::Error saying what was found when there is
// no usable device.
std::unique_ptr<Backend> make_vulkan_backend();

}  // namespace keel::backend
