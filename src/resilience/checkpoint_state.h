// The tensors of a checkpoint and how they map to a trainer: f32 master
// parameters (params.safetensors), AdamW moments (optimizer.safetensors),
// the model's non-parameter state buffers (model_state.safetensors) and
// tensors other components add (extra.safetensors). Capture copies the
// trainer's state into reusable host buffers (the snapshot a background
// writer reads while training goes on); restore copies a verified
// checkpoint back. bf16 compute copies are derived, not stored: restore
// refreshes them with Model::sync_compute_weights().
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/dtype.h"
#include "core/shape.h"
#include "io/safetensors.h"
#include "resilience/checkpoint_manifest.h"
#include "train/trainer.h"

namespace keel::resilience {

inline constexpr const char* kCheckpointParamsFile = "params.safetensors";
inline constexpr const char* kCheckpointOptimizerFile = "optimizer.safetensors";
inline constexpr const char* kCheckpointModelStateFile = "model_state.safetensors";
inline constexpr const char* kCheckpointExtraFile = "extra.safetensors";

// State of other components that rides along in a checkpoint: `json` lands in
// the manifest's "extra" object, `tensors` in extra.safetensors (names must be
// unique; prefix them with the component's name).
struct CheckpointExtra {
  nlohmann::json json = nlohmann::json::object();
  std::vector<io::NamedTensor> tensors;
};

// Everything one checkpoint holds, in host memory.
struct CheckpointState {
  CheckpointManifest manifest;               // files[] is filled by the writer
  std::vector<io::NamedTensor> params;       // Parameter::name -> f32 master value
  std::vector<io::NamedTensor> optimizer;    // "exp_avg.<name>", "exp_avg_sq.<name>"
  std::vector<io::NamedTensor> model_state;  // Model::state_buffers()
  std::vector<io::NamedTensor> extra;        // CheckpointExtra::tensors
  size_t nbytes() const;
};

struct TensorSpec {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
};

// The tensors a checkpoint of this trainer must hold, per file.
struct CheckpointLayout {
  std::vector<TensorSpec> params, optimizer, model_state;
};
CheckpointLayout training_state_layout(train::Trainer& trainer);

// Copies parameters, moments and state buffers into `out` (reusing its host
// buffers when names and shapes still match, so steady-state saves do not
// allocate) and sets manifest.step and manifest.optimizer_t. The caller fills
// the rest of the manifest and `extra`. moments: the parameter index range
// whose moments are copied (a snapshot keeps only its ZeRO-1 shard's).
// alias: where the backend's memory is the host's, out's tensors share the
// trainer's storage instead of copying it (no copy at all), for a caller that
// is done with out before the next step changes the state.
void capture_training_state(train::Trainer& trainer, CheckpointState& out,
                            std::pair<size_t, size_t> moments = {0, SIZE_MAX}, bool alias = false);

}  // namespace keel::resilience
