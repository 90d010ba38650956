// The checkpoint manifest (manifest.json inside each checkpoint directory):
// what the checkpoint is (format version, step, world size, config, tokenizer),
// the training state that is not a tensor (RNG/data cursor, LR schedule,
// optimizer step count, health-detector state, extra per-component state) and
// the size and XXH3 checksum of every other file in the directory. A
// checkpoint is trusted only when its manifest parses and every file matches.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/config.h"

namespace keel::resilience {

// A checkpoint that is missing, damaged or belongs to another run. The
// message names the file and the reason.
class CheckpointError : public IoError {
 public:
  using IoError::IoError;
};

// Bumped whenever a reader of the old format would misread the new one.
inline constexpr int kCheckpointFormatVersion = 1;
inline constexpr const char* kCheckpointFormatName = "keel-checkpoint";
inline constexpr const char* kCheckpointManifestFile = "manifest.json";

struct CheckpointFileEntry {
  std::string name;  // relative to the checkpoint directory
  uint64_t bytes = 0;
  std::string xxh3;  // 16 lowercase hex digits
};

struct CheckpointManifest {
  int format_version = kCheckpointFormatVersion;
  int64_t step = 0;         // optimizer steps done (== the data cursor and LR position)
  int64_t optimizer_t = 0;  // AdamW's t (lags step when updates were skipped)
  int64_t world_size = 1;
  std::string tokenizer_id;
  // Every config key as "dotted.key" -> its TOML literal (config_manifest_map).
  nlohmann::json config = nlohmann::json::object();
  // {"seed", "data_cursor_step", "micro_batches_per_step"}: batches are a pure
  // function of (seed, global micro-batch index), so this is the whole RNG state.
  nlohmann::json rng = nlohmann::json::object();
  // {"lr", "min_lr", "warmup_steps", "total_steps", "next_lr"}.
  nlohmann::json lr_schedule = nlohmann::json::object();
  // Health-detector state (loss-spike statistics, ...): filled and read back
  // by the detectors through the run loop; opaque to the checkpoint code.
  nlohmann::json health = nlohmann::json::object();
  // Per-component state owned by other parts (keyed by component name);
  // tensors of theirs go to extra.safetensors. Opaque to the checkpoint code.
  nlohmann::json extra = nlohmann::json::object();
  std::vector<CheckpointFileEntry> files;
  double created_unix = 0;
};

std::string manifest_to_json(const CheckpointManifest& m);

// Parses and validates a manifest; `path` names it in CheckpointErrors
// (malformed JSON, a missing or mistyped field, a format version newer than
// kCheckpointFormatVersion, a file entry with a bad name or checksum).
CheckpointManifest parse_manifest(std::string_view text, const std::string& path);

// The config as the manifest stores it: every schema key -> its TOML literal.
nlohmann::json config_manifest_map(const io::Config& cfg);

// Keys whose change does not alter the training trajectory (logging, eval,
// threads, paths of caches, the [run] and [checkpoint] sections): a resumed
// run may differ from its checkpoint there. Every other [model], [data] and
// [train] key must match.
bool config_key_may_differ(std::string_view key);

// First difference between a checkpoint's config and this run's, as
// "model.n_layer is 2 in the checkpoint but 4 in this run"; "" when they match.
// Keys present on only one side (a newer or older schema) are not compared,
// nor are the keys only the deepseek architecture reads when this run's
// model.arch is another one (their defaults may change without changing it).
std::string config_difference(const nlohmann::json& checkpoint, const nlohmann::json& run);

}  // namespace keel::resilience
