// `keel info`: what this machine and build offer (CPU features, backends, GEMM).
#include <fmt/format.h>

#include "backend/backend.h"
#include "cli/commands/commands.h"
#include "core/cpu_features.h"
#include "core/error.h"
#ifdef KEEL_HAVE_VULKAN
#include "backend/vulkan/vk_context.h"
#endif

namespace keel::cli {

void add_info_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("info", "Print CPU features and the backends in this build");
  cmd->callback([] {
    const auto& f = cpu_features();
    fmt::print("cpu: {}\nvector level: {}\n", f.brand, f.level());
    for (const auto& n : backend::backend_names()) {
      auto be = backend::make_backend(n);
      fmt::print("backend {}: {}\n", n, be->describe());
    }
#ifdef KEEL_HAVE_VULKAN
    // A machine without a Vulkan driver still gets the rest of `keel info`.
    try {
      for (const auto& d : vulkan::list_devices())
        fmt::print("vulkan device {}\n", vulkan::describe_device(d));
      // Created by name only (a machine may have no device); say what it runs.
      fmt::print(
          "backend vulkan: every kernel family in f32 and bf16 plus the quantized formats, on "
          "KEEL_VULKAN_DEVICE (default 0); check with `keel verify kernels --backends "
          "ref,vulkan`\n");
    } catch (const Error& e) {
      fmt::print("vulkan: {}\n", e.what());
    }
#else
    fmt::print("vulkan: not built in (needs libvulkan-dev and glslc at configure time)\n");
#endif
  });
}

}  // namespace keel::cli
