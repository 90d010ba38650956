// Reading a run directory for `keel report`: metrics.jsonl, events.jsonl,
// config.toml, summary.json and environment.json, tolerantly. A truncated or
// invalid line, an empty file or a missing file is skipped with a notice that
// names it, so a live or crashed run still renders.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "resilience/goodput.h"

namespace keel::cli::report {

inline constexpr const char* kMetricsFile = "metrics.jsonl";
inline constexpr const char* kEventsFile = "events.jsonl";
inline constexpr const char* kEnvironmentFile = "environment.json";

// Everything the report shows about one run.
struct RunData {
  std::string dir;
  std::string name;  // last path component of dir
  // metrics.jsonl by column: every numeric field of any line becomes a column
  // the length of `step`, NaN where a line lacks it (val_loss on most steps).
  std::vector<int64_t> step;
  std::map<std::string, std::vector<double>> columns;
  std::vector<bool> skipped;
  std::vector<resilience::GoodputEvent> events;
  std::string config_toml;  // as written
  // config.toml flattened to dotted keys ("train.batch_size" -> "16").
  std::vector<std::pair<std::string, std::string>> config;
  nlohmann::json summary;            // object, or null when missing/invalid
  nlohmann::json environment;        // object, or null when missing/invalid
  std::vector<std::string> notices;  // what was skipped and why

  // Tokens per optimizer step (batch_size * seq_len * grad_accum * world
  // size) from the config, else from tokens_per_s * step_seconds; 0 if unknown.
  double tokens_per_step = 0;

  // The config value under a dotted key, or "" when absent.
  std::string config_value(const std::string& key) const;
  // Inputs of the goodput computation.
  std::vector<resilience::GoodputStep> goodput_steps() const;
  resilience::Goodput goodput() const;
};

// Reads dir. A directory that does not exist is an IoError naming it; any
// file inside that is missing or damaged becomes a notice instead.
RunData read_run(const std::string& dir);

}  // namespace keel::cli::report
