// Logging: one process-wide spdlog logger named "keel", writing to stderr, with
// the rank in the pattern once distributed runs set it.
#pragma once
#include <spdlog/spdlog.h>

namespace keel {

// Returns the shared logger (created on first use).
spdlog::logger& log();
// Sets the level from a name ("debug", "info", "warn", "error").
void set_log_level(const std::string& level);
// Prefixes every line with "[rank R]".
void set_log_rank(int rank);

}  // namespace keel
