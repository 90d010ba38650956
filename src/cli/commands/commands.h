// Each verb of the `keel` program registers itself on the CLI11 app here; the
// verb's work lives in its own file under cli/commands/.
#pragma once
#include <CLI/CLI.hpp>

namespace keel::cli {

void add_verify_command(CLI::App& app);
void add_train_command(CLI::App& app);
void add_generate_command(CLI::App& app);
void add_data_command(CLI::App& app);
void add_info_command(CLI::App& app);
void add_launch_command(CLI::App& app);
void add_serve_command(CLI::App& app);
void add_report_command(CLI::App& app);
void add_export_command(CLI::App& app);
void add_plan_command(CLI::App& app);

}  // namespace keel::cli
