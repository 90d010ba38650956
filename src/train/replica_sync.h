// ReplicaSync: how one optimizer step is shared between data-parallel
// replicas. The trainer calls it at fixed points of a step; the dist layer
// implements it over a communicator. Without one the trainer is one replica.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "nn/parameter.h"

namespace keel::train {

class AdamW;

class ReplicaSync {
 public:
  virtual ~ReplicaSync() = default;
  // Before the step's first micro-batch (step is 0-based).
  virtual void begin_step(int64_t step) = 0;
  // After the last micro-batch's backward. On return every replica holds the
  // same gradients: the mean over replicas, reduced in a fixed order.
  virtual void finish_gradients(const std::vector<nn::Parameter*>& params) = 0;
  // Whether the gradients must be zeroed before the backward: a sync that
  // reduces them as they become ready may read one the backward has not
  // written yet. Otherwise the trainer clears them lazily
  // (Parameter::grad_stale), which saves a pass over every gradient.
  virtual bool needs_zeroed_gradients() const { return true; }
  // Whether the parameters may have changed after the optimizer wrote them
  // this step (a gather of ZeRO-1 shards, an injected fault). When not, and
  // the update wrote the bf16 compute copies itself, the trainer does not
  // derive them again.
  virtual bool changed_weights_after_update() const { return true; }
  // Mean of a per-replica scalar (the step's loss), identical on every replica.
  virtual double mean(double x) = 0;
  // Applies the update at rate lr with gradients scaled by grad_scale. The
  // default is the plain full update; ZeRO-1 updates this replica's shard of
  // the optimizer state and then gathers the parameters.
  virtual void optimizer_step(AdamW& opt, double lr, float grad_scale);
  // Before a checkpoint is taken: makes the whole optimizer state (every
  // moment of every parameter) valid in `opt` on every replica. ZeRO-1
  // gathers its shards here; after a load each replica keeps its own shard.
  virtual void gather_optimizer_state(AdamW& opt) { (void)opt; }
  // In place: x := the sum of x over replicas, the same bits everywhere. For
  // model state that must agree across replicas (a mixture of experts' load
  // counts, which drive its routing bias).
  virtual void sum_state(std::span<float> x) { (void)x; }

  // After the step's update (or its skip), on every replica: a sync that
  // changes parameters outside the optimizer (DiLoCo's outer step) does it
  // here and returns true, so the trainer refreshes its compute weights.
  virtual bool end_step() { return false; }
  // Whether every replica holds the same parameters now. DiLoCo's replicas
  // drift apart between outer steps: checkpoints and replica hash checks
  // wait for the next outer step.
  virtual bool replicas_identical() const { return true; }
  // Bytes this replica sent in the last step (metrics.jsonl "bytes_sent").
  virtual uint64_t step_bytes_sent() const { return 0; }

  // Per-replica state a checkpoint must hold besides the model and the
  // optimizer (error-feedback residuals, DiLoCo's outer momentum and the
  // other replicas' inner moments). Collected on every replica inside
  // gather_optimizer_state (a collective); save_state is then called on the
  // replica that writes, with the manifest's "extra" object and the extra
  // tensors to add to. load_state gets them back on every replica (f null:
  // the checkpoint has no extra tensors) after the common state was restored.
  virtual void save_state(nlohmann::json& j, std::vector<io::NamedTensor>& tensors) {
    (void)j;
    (void)tensors;
  }
  virtual void load_state(const nlohmann::json& j, const io::SafetensorsFile* f) {
    (void)j;
    (void)f;
  }
};

}  // namespace keel::train
