// keel: the command-line face of the library. Verbs register themselves; any
// keel::Error that reaches here becomes one clear line and exit code 1.
#include <cstdio>
#include <exception>

#include "cli/commands/commands.h"
#include "core/error.h"

int main(int argc, char** argv) {
  CLI::App app{
      "keel: train transformer language models on untrusted hardware, serve them elsewhere"};
  app.require_subcommand(1);
  keel::cli::add_verify_command(app);
  keel::cli::add_train_command(app);
  keel::cli::add_generate_command(app);
  keel::cli::add_data_command(app);
  keel::cli::add_info_command(app);
  keel::cli::add_launch_command(app);
  keel::cli::add_serve_command(app);
  keel::cli::add_report_command(app);
  keel::cli::add_plan_command(app);
  keel::cli::add_export_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const keel::Error& e) {
    std::fprintf(stderr, "keel: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "keel: internal error: %s\n", e.what());
    return 2;
  }
  return 0;
}
