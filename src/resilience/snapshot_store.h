// In-memory snapshots of a rank's training state in POSIX shared memory
// (/dev/shm), so they outlive the rank's process: a restarted world finds
// them there. Shared memory on one host stands for the host memory of each
// rank's machine (as in Gemini, SOSP 2023, where an agent's CPU memory holds
// the checkpoints of its GPUs).
//
// Every rank slot r of a run owns four objects, named from a hash of the run
// directory's absolute path: two slots of its own state ("own", double
// buffered) and two slots of the copy it keeps for its ring neighbour r-1
// ("buddy"). A write goes to the slot that does not hold the newest complete
// snapshot, clears that slot's complete flag first and sets it last (after
// the payload and its XXH3), so a crash in the middle of a write leaves the
// previous snapshot whole and the torn slot is never loaded.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "resilience/piece_digest.h"

namespace keel::resilience {

enum class SnapshotKind : uint32_t { Own = 0, Buddy = 1 };

inline constexpr uint64_t kSnapshotMagic = 0x50414e534c45454bull;  // "KEELSNAP"
// 2: payload_xxh3 is piece_digest (piece_digest.h), no longer XXH3 of the whole.
inline constexpr uint32_t kSnapshotVersion = 2;
inline constexpr size_t kSnapshotHeaderBytes = 4096;  // the payload starts page-aligned
inline constexpr const char* kSnapshotRunIdFile = "snapshot_id";

// What one slot holds; written before the payload, `complete` last.
struct SnapshotSlotHeader {
  uint64_t magic = kSnapshotMagic;
  uint32_t version = kSnapshotVersion;
  uint32_t complete = 0;  // 1 once payload and checksum are in (release order)
  int64_t step = 0;       // optimizer steps done
  int64_t optimizer_t = 0;
  int32_t world_size = 0;
  int32_t holder_rank = 0;  // the rank slot whose memory holds it
  int32_t shard_rank = 0;   // whose optimizer shard the payload carries
  uint32_t kind = 0;        // SnapshotKind
  // Parameter index range whose moments the payload holds, of n_params.
  uint64_t moment_begin = 0, moment_end = 0, n_params = 0;
  uint64_t run_id = 0;       // the run's snapshot_id (a fresh start draws a new one)
  uint64_t config_hash = 0;  // snapshot_config_hash of the run's config
  uint64_t payload_bytes = 0;
  uint64_t payload_xxh3 = 0;  // piece_digest of the payload
};

// A complete slot whose checksum matched.
struct SnapshotCopy {
  SnapshotSlotHeader header;
  int slot = 0;  // 0 or 1
  SnapshotKind kind() const { return SnapshotKind(header.kind); }
};

// "/keel-<16 hex of the run directory's absolute path>-r<rank>-<own|buddy>-<slot>".
std::string snapshot_segment_name(const std::string& run_dir, int rank, SnapshotKind kind,
                                  int slot);

// The run's snapshot id from <run_dir>/snapshot_id (0 when there is none).
uint64_t read_snapshot_run_id(const std::string& run_dir);
// Draws a new id and writes it (a fresh start: older snapshots stop matching).
uint64_t new_snapshot_run_id(const std::string& run_dir);

// The slots of one rank slot of a run. Writers map their objects once and
// grow them when a payload outgrows them.
class SnapshotStore {
 public:
  SnapshotStore(std::string run_dir, int rank);
  ~SnapshotStore();
  SnapshotStore(const SnapshotStore&) = delete;
  SnapshotStore& operator=(const SnapshotStore&) = delete;

  // Complete slots of `kind` whose checksum matches and that belong to this
  // run (run_id), world size and config; each other slot found adds a reason
  // to `rejected` (nullptr: not reported).
  std::vector<SnapshotCopy> scan(SnapshotKind kind, uint64_t run_id, int world_size,
                                 uint64_t config_hash, std::vector<std::string>* rejected) const;
  // The payload of a slot `scan` returned (a view into the mapping, valid
  // until the slot is written again); CheckpointError when it changed since.
  std::span<const std::byte> payload(const SnapshotCopy& c) const;

  // Writes a snapshot into the slot of `kind` that does not hold the newest
  // complete one: header (complete cleared), then fill(payload bytes), then
  // the checksum, then complete. Returns the slot written.
  int write(SnapshotKind kind, SnapshotSlotHeader header, size_t payload_bytes,
            const std::function<void(std::span<std::byte>)>& fill);
  // The same, where fill calls final_through(n) whenever payload bytes
  // [0, n) will not change again: the checksum reads them while they are
  // still in cache, so a snapshot is one pass over memory, not two.
  using FinalThrough = std::function<void(size_t n)>;
  int write(SnapshotKind kind, SnapshotSlotHeader header, size_t payload_bytes,
            const std::function<void(std::span<std::byte>, const FinalThrough&)>& fill);
  // The same, with the payload copied from `segments` by set_threads()
  // threads, each piece checksummed while in cache (copy_and_digest).
  int write(SnapshotKind kind, SnapshotSlotHeader header, size_t payload_bytes,
            std::span<const CopySegment> segments, const std::function<void()>& halfway = {});
  // Threads that copy and checksum payloads (writes and scans); 1 by default.
  void set_threads(int n) { threads_ = n < 1 ? 1 : n; }
  // Clears the complete flag of every slot of `kind` holding a step other
  // than keep_step (a restored world drops what is newer than its restore).
  void invalidate_except(SnapshotKind kind, int64_t keep_step);
  // Bytes of shared memory the four objects hold now.
  uint64_t bytes_held() const;
  // Removes the four objects (run finished, fresh start, or the machine lost).
  void unlink_all();

 private:
  struct Mapping {
    int fd = -1;
    std::byte* base = nullptr;
    size_t size = 0;
  };
  Mapping& writable(SnapshotKind kind, int slot);
  int write_digested(SnapshotKind kind, SnapshotSlotHeader header, size_t payload_bytes,
                     const std::function<uint64_t(std::span<std::byte>)>& fill_and_digest);
  void unmap(Mapping& m);

  std::string run_dir_;
  int rank_;
  int threads_ = 1;
  Mapping maps_[2][2];  // [kind][slot], opened for writing on first use
};

// Removes rank slot `rank`'s objects without a store (fault injection of a
// lost machine; cleanup).
void unlink_rank_snapshots(const std::string& run_dir, int rank);
// Removes every object of the run found in /dev/shm, of any rank slot (a
// finished run, including slots of ranks an exclusion removed).
void unlink_run_snapshots(const std::string& run_dir);

// Which copies a world of size(held) ranks restores from. held[r]: the copies
// rank slot r holds (own and buddy). needed[r]: the moment range rank r keeps
// (its ZeRO-1 shard, or all parameters). A step is usable when some own copy
// (parameters, model state, manifest) and, for every rank, one copy covering
// its range exist at that step.
struct SnapshotRestorePlan {
  int64_t step = 0;  // 0: none usable
  // Per rank: the rank whose own copy gives the common state, and the copy
  // (holder rank, kind, slot) that gives its moments.
  std::vector<int> common_from;
  struct Source {
    int holder = 0;
    SnapshotKind kind = SnapshotKind::Own;
    int slot = 0;
  };
  std::vector<Source> moments_from;
  std::string why_not;  // when step is 0: why the newest snapshot step is unusable
};
SnapshotRestorePlan plan_snapshot_restore(const std::vector<std::vector<SnapshotCopy>>& held,
                                          const std::vector<std::pair<uint64_t, uint64_t>>& needed);

// Newest step a world of world_size ranks could restore from the snapshots of
// run_dir (the supervisor's count of steps lost); 0 when none. The config is
// not checked here (the ranks check it; a changed config falls back to disk).
int64_t newest_restorable_snapshot_step(const std::string& run_dir, int world_size);

}  // namespace keel::resilience
