#include "cli/commands/engine_options.h"

namespace keel::cli {

void add_engine_options(CLI::App* cmd, serve::EngineOptions& e) {
  cmd->add_option("--backend", e.backend, "backend: cpu | ref | vulkan")
      ->check(CLI::IsMember({"cpu", "ref", "vulkan"}))
      ->capture_default_str();
  cmd->add_option("--quant", e.quant, "weight quantization: none | int8 | q8_0 | q4")
      ->check(CLI::IsMember({"none", "int8", "q8_0", "q4"}))
      ->capture_default_str();
  cmd->add_option("--kv-dtype", e.kv_dtype,
                  "KV cache elements: f32 | bf16 (half the memory per sequence and half the "
                  "bytes a decode step reads from the cache)")
      ->check(CLI::IsMember({"f32", "bf16"}))
      ->capture_default_str();
  cmd->add_option("--threads", e.threads, "compute threads (0: every core)")
      ->check(CLI::Range(0, 4096))
      ->capture_default_str();
}

}  // namespace keel::cli
