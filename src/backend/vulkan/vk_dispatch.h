// Shared by the vk_kernels*.cpp files: 32-bit index checks, dtype codes,
// grid sizes, and the binding of a buffer view at an arbitrary offset.
#pragma once
#include <algorithm>
#include <cstdint>
#include <limits>

#include "backend/vulkan/vk_context.h"
#include "backend/vulkan/vk_memory_pool.h"
#include "core/dtype.h"
#include "core/error.h"

namespace keel::vulkan::detail {

inline uint32_t u32(int64_t v, const char* what) {
  if (v < 0 || v > int64_t(std::numeric_limits<uint32_t>::max()))
    fail<KernelError>("Vulkan: {} = {} does not fit the shaders' 32-bit indices", what, v);
  return uint32_t(v);
}

inline uint32_t is_bf16(DType dt, const char* kernel) {
  if (dt == DType::F32) return 0;
  if (dt == DType::BF16) return 1;
  fail<KernelError>("Vulkan {}: dtype {} not supported (f32, bf16)", kernel, dtype_name(dt));
}

// Grid-stride kernels: enough workgroups to fill any device, within limits.
inline uint32_t groups_for(int64_t n, int64_t per_group) {
  return uint32_t(std::clamp<int64_t>((n + per_group - 1) / per_group, 1, 65535));
}

// A descriptor's offset must be a multiple of the device's storage-buffer
// alignment, but a tensor view may start anywhere: the range is bound from
// the aligned offset below it and the rest reaches the shader as an element
// offset (push constant).
struct Bound {
  Buffer range;
  uint32_t elem = 0;
};
inline Bound bind(Context& ctx, const Buffer& b, uint64_t elem_bytes) {
  const uint64_t align = std::max<uint64_t>(1, ctx.limits().minStorageBufferOffsetAlignment);
  const uint64_t base = b.offset / align * align, rest = b.offset - base;
  if (rest % elem_bytes != 0)
    fail<KernelError>("Vulkan: buffer offset {} is not a multiple of the element size {}", b.offset,
                      elem_bytes);
  Bound r{b, u32(int64_t(rest / elem_bytes), "element offset")};
  r.range.offset = base;
  r.range.size = (rest + b.size + 3) / 4 * 4;
  return r;
}
inline uint64_t elem_bytes(DType dt) {
  return dt == DType::BF16 ? 2 : 4;
}

}  // namespace keel::vulkan::detail
