// The backends compiled into this build, created by name.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "backend/backend.h"
#include "backend/cpu/cpu_backend.h"
#include "backend/ref/ref_backend.h"
#include "backend/stub/stub_backend.h"
#ifdef KEEL_HAVE_VULKAN
#include "backend/vulkan/vk_backend.h"
#endif
#include "core/error.h"

namespace keel::backend {

std::string_view kernel_name(Kernel k) {
  static constexpr std::string_view names[] = {
      "matmul",    "embedding",   "layernorm",     "rmsnorm", "rope",     "attention",
      "gelu",      "silu",        "swiglu",        "add",     "bias_add", "cross_entropy",
      "adamw",     "reduce",      "sum_squares",   "cast",    "quantize", "qmatmul",
      "moe_route", "moe_permute", "grouped_matmul", "copy_rows", "mla_qkv"};
  static_assert(std::size(names) == kKernelCount, "kernel_name table out of step with Kernel");
  return names[int(k)];
}

bool standard_dtype_support(Kernel k, DType dt) {
  const bool f32_bf16 = dt == DType::F32 || dt == DType::BF16;
  const bool any_float = f32_bf16 || dt == DType::F16;
  switch (k) {
    case Kernel::Gelu:
    case Kernel::Silu:
    case Kernel::SwiGlu:
    case Kernel::Add:
    case Kernel::BiasAdd:
    case Kernel::Cast:
    case Kernel::SumSquares:
      return any_float;
    case Kernel::AdamW:
    case Kernel::MoeRoute:
      return dt == DType::F32;
    case Kernel::Quantize:
    case Kernel::QMatmul:
      return dt == DType::I8 || dt == DType::Q4_0 || dt == DType::Q8_0;
    case Kernel::kCount:
      return false;
    default:
      return f32_bf16;
  }
}

std::vector<std::string> backend_names() {
  return {"ref", "cpu"};
}

std::unique_ptr<Backend> make_backend(std::string_view name) {
  if (name == "ref") return make_ref_backend();
  if (name == "cpu") return make_cpu_backend();
  // The porting template: every kernel unsupported. Creatable, never listed.
  if (name == "stub") return make_stub_backend();
#ifdef KEEL_HAVE_VULKAN
  // Listed by `keel info` with its devices, not by backend_names(): a machine
  // without a Vulkan device still runs every default command.
  if (name == "vulkan") return make_vulkan_backend();
  constexpr std::string_view device_backends = ", vulkan";
#else
  constexpr std::string_view device_backends = " (vulkan: not built in)";
#endif
  fail("unknown backend '{}' (this build has: {}{})", name, fmt::join(backend_names(), ", "),
       device_backends);
}

}  // namespace keel::backend
