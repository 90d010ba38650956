// Loads checkpoints and refuses any it cannot vouch for. A checkpoint is
// verified when its manifest parses, its format version is one this keel
// reads, its config and tokenizer match the run's, every listed file exists
// with the recorded size and XXH3, and the tensors are exactly the ones the
// trainer holds. The newest verified checkpoint is used; each one that fails
// is reported with the file and the reason and skipped for the next older;
// when checkpoints exist but none verifies, loading stops with all reasons.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "resilience/checkpoint_manifest.h"
#include "resilience/checkpoint_state.h"
#include "train/trainer.h"

namespace keel::resilience {

// What a checkpoint must agree with to be used by this run.
struct CheckpointExpectations {
  nlohmann::json config = nlohmann::json::object();  // config_manifest_map of this run
  std::string tokenizer_id;                          // "" : not checked
  CheckpointLayout layout;                           // training_state_layout of the trainer
};

// A verified checkpoint, its files read into memory.
struct LoadedCheckpoint {
  std::string path;
  CheckpointManifest manifest;
  io::SafetensorsFile params, optimizer, model_state;
  std::optional<io::SafetensorsFile> extra;
};

// Verifies the checkpoint directory `dir`; CheckpointError naming the file and
// the reason when anything is wrong.
LoadedCheckpoint verify_checkpoint(const std::string& dir, const CheckpointExpectations& want);

struct RejectedCheckpoint {
  std::string path;
  std::string reason;  // the CheckpointError/IoError message
};

// The newest checkpoint under root that verifies, trying finished
// checkpoints from the newest down (including one newer than `latest`,
// which a crash between the rename and the update of `latest` leaves
// complete). on_reject is called for each one skipped. nullopt when root
// holds no checkpoint at all; CheckpointError listing every reason when it
// holds some but none verifies.
std::optional<LoadedCheckpoint> load_newest_verified(
    const std::string& root, const CheckpointExpectations& want,
    const std::function<void(const RejectedCheckpoint&)>& on_reject = {});

// Copies a verified checkpoint into the trainer: parameters, moments,
// optimizer t, step count, model state buffers; then refreshes the compute
// weights. The caller restores the manifest's health/extra JSON and
// extra.safetensors into their owners.
void restore_training_state(const LoadedCheckpoint& ckpt, train::Trainer& trainer);

// Where a restore reads one stored tensor: fills `host` (the trainer's dtype
// and shape, in host memory) with the stored bytes, or throws naming the source.
using StoredTensorReader = std::function<void(const std::string& name, Tensor& host)>;
// The restore itself, from any store (checkpoint files, in-memory snapshots):
// parameters, the moments of parameters [moments.first, moments.second) (the
// others are left as they are), state buffers, t and the step count; then
// the compute weights are refreshed.
void restore_training_tensors(train::Trainer& trainer, const StoredTensorReader& params,
                              const StoredTensorReader& moments,
                              std::pair<size_t, size_t> moment_range,
                              const StoredTensorReader& state, int64_t step, int64_t optimizer_t);

}  // namespace keel::resilience
