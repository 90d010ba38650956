#include "cli/commands/commands.h"

namespace keel::cli {

void add_generate_command(CLI::App& app) {
  app.add_subcommand("generate", "(not yet available)");
}

}  // namespace keel::cli
