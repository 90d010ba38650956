#include "cli/commands/commands.h"

namespace keel::cli {

void add_verify_command(CLI::App& app) {
  app.add_subcommand("verify", "(not yet available)");
}

}  // namespace keel::cli
