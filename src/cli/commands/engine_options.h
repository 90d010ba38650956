// The options `keel generate` and `keel serve` share: where and how the model
// runs (backend, weight format, KV cache elements, compute threads), declared
// once so the two verbs name, document and check them alike.
#pragma once
#include <CLI/CLI.hpp>

#include "serve/engine.h"

namespace keel::cli {

// Adds --backend, --quant, --kv-dtype and --threads to cmd, bound to e.
// CLI11 refuses a value outside each one's set or range, naming the option.
void add_engine_options(CLI::App* cmd, serve::EngineOptions& e);

}  // namespace keel::cli
