#include "cli/commands/commands.h"

namespace keel::cli {

void add_train_command(CLI::App& app) {
  app.add_subcommand("train", "(not yet available)");
}

}  // namespace keel::cli
