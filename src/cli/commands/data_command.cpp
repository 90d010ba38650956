#include "cli/commands/commands.h"

namespace keel::cli {

void add_data_command(CLI::App& app) {
  app.add_subcommand("data", "(not yet available)");
}

}  // namespace keel::cli
