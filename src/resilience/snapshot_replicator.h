// In-memory replicated snapshots of a data-parallel world: every K steps each
// rank writes its state (parameters, model state, the optimizer moments it
// keeps, the manifest with health, data cursor and RNG) into its own shared
// memory slots (snapshot_store.h) and, under ZeRO-1, sends the part only it
// holds (its optimizer shard) to its ring neighbour rank+1, which keeps it in
// its buddy slots. The copy travels while the next step runs (a nonblocking
// exchange, completed at the next snapshot, or earlier when poll() finds it
// done). A new world decides collectively whether a snapshot newer than the
// newest verified disk checkpoint has a copy of every shard, and the holders
// send each rank what it lacks through the communicator.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "dist/communicator.h"
#include "resilience/checkpoint_state.h"
#include "resilience/snapshot_store.h"
#include "resilience/state_image.h"

namespace keel::resilience {

struct SnapshotOptions {
  int64_t every = 1;
  std::string run_dir;
  int rank = 0, world_size = 1;
  dist::Communicator* comm = nullptr;  // null in a world of one
  // Per rank: the parameter index range whose moments it keeps (its ZeRO-1
  // shard; every parameter without ZeRO-1).
  std::vector<std::pair<size_t, size_t>> shards;
  size_t n_params = 0;
  uint64_t config_hash = 0;  // snapshot_config_hash
  int threads = 1;           // that copy and checksum a snapshot
  // Fault injection: called once half of the own snapshot of `step` is written.
  std::function<void(int64_t step)> halfway;
};

// What a starting world restores from snapshots (decided on every rank alike).
struct SnapshotDecision {
  int64_t step = 0;     // 0: not from a snapshot
  std::string why_not;  // when snapshots existed but are not used
  // Per rank: {"rank", "state": "own:R", "moments": "own:R" | "buddy:R"}.
  nlohmann::json copies = nlohmann::json::array();
  SnapshotRestorePlan plan;
};

// The images this rank restores from (views into local shared memory or
// into the received buffers below).
struct SnapshotImages {
  std::span<const std::byte> common, moments;
  std::vector<std::byte> common_buf, moments_buf;
};

class SnapshotReplicator {
 public:
  explicit SnapshotReplicator(SnapshotOptions opt);
  ~SnapshotReplicator();

  bool due(int64_t step) const { return opt_.every > 0 && step % opt_.every == 0; }
  // This rank's moment range.
  std::pair<size_t, size_t> shard() const { return opt_.shards[size_t(opt_.rank)]; }

  // Collective, at the start of a world that resumes: which snapshot step (if
  // any) is newer than disk_step (this rank's newest verified checkpoint;
  // the world uses the largest) and has a copy of every shard.
  SnapshotDecision decide(int64_t disk_step, uint64_t run_id);
  // Collective: the images of d.step this rank needs, fetched from their holders.
  SnapshotImages fetch(const SnapshotDecision& d);
  // After a restore from d.step: drops this rank's slots of any other step
  // newer than it (a previous world's work that the restore undid).
  void restored(int64_t step);
  // Sets the run id written into new snapshots.
  void set_run_id(uint64_t id) { run_id_ = id; }

  // Writes `st` (the state after its manifest.step, with this rank's moment
  // range) into the own slot and starts the copy of the shard to rank+1.
  // Collective under ZeRO-1 (every rank snapshots the same steps).
  void take(const CheckpointState& st);
  // Completes the copy in flight if it has arrived (no waiting).
  void poll();
  // Completes the copy in flight (waiting for it).
  void complete();
  // Removes this rank's slots (run finished, started afresh, or resumed from disk).
  void discard();
  // Shared memory this rank holds for snapshots (own and buddy slots).
  uint64_t bytes_held() const { return store_.bytes_held(); }

 private:
  void finish_exchange();
  bool sharded() const;

  SnapshotOptions opt_;
  SnapshotStore store_;
  uint64_t run_id_ = 0;
  // The copy in flight: received bytes are [step][optimizer_t][image].
  std::unique_ptr<dist::PendingExchange> exchange_;
  std::vector<std::byte> send_buf_, recv_buf_;  // the last exchange's, for the next
  std::vector<size_t> buddy_bytes_;       // each rank's message size (learned at the first take)
  StateImagePlan own_plan_, buddy_plan_;  // the last take's (their tensor tables are reused)
};

// Hash of the config keys that shape the trajectory (checkpoint_manifest.h's
// config_difference compares the same keys) and the tokenizer.
uint64_t snapshot_config_hash(const nlohmann::json& config_map, const std::string& tokenizer_id);

}  // namespace keel::resilience
