// `keel info`: what this machine and build offer (CPU features, backends, GEMM).
#include <fmt/format.h>

#include "backend/backend.h"
#include "cli/commands/commands.h"
#include "core/cpu_features.h"

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
  });
}

}  // namespace keel::cli
