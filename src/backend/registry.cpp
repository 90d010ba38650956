// The backends compiled into this build, created by name.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "backend/backend.h"
#include "backend/cpu/cpu_backend.h"
#include "backend/ref/ref_backend.h"
#include "core/error.h"

namespace keel::backend {

std::string_view kernel_name(Kernel k) {
  static constexpr std::string_view names[] = {
      "matmul", "embedding", "layernorm", "rmsnorm",       "rope",  "attention",
      "gelu",   "silu",      "swiglu",    "add",           "bias_add", "cross_entropy",
      "adamw",  "reduce",    "sum_squares", "cast",        "quantize", "qmatmul"};
  static_assert(std::size(names) == kKernelCount, "kernel_name table out of step with Kernel");
  return names[int(k)];
}

std::vector<std::string> backend_names() { return {"ref", "cpu"}; }

std::unique_ptr<Backend> make_backend(std::string_view name) {
  if (name == "ref") return make_ref_backend();
  if (name == "cpu") return make_cpu_backend();
  fail("unknown backend '{}' (this build has: {})", name, fmt::join(backend_names(), ", "));
}

}  // namespace keel::backend
