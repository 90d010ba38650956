#include "resilience/snapshot_store.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <random>
#include <set>

#include <fmt/format.h>

// XXH3 dispatched at run time to the widest vectors the CPU has: the inlined
// build is SSE2 only (4 GB/s here, against 60 in cache with AVX-512).
// The streaming state lives on the stack (its layout is this header's).
#define XXH_STATIC_LINKING_ONLY
#include <xxh_x86dispatch.h>

#include "core/error.h"
#include "io/atomic_file.h"
#include "resilience/checkpoint_manifest.h"
#include "resilience/piece_digest.h"

namespace keel::resilience {

namespace fs = std::filesystem;

namespace {

// Linux 5.14's populate advice (uapi values; older libc headers lack the names).
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

// Maps a slot and fills its page tables in one call. A slot mapped anew (a
// restarted rank, a released warm spare) would otherwise take a page fault per
// 4 KiB in its first snapshot or scan: 50-95 ms for 17 MB where faults are
// slow (a VM), against about 1 ms populated. Only advice: an older kernel
// faults the pages in as before.
std::byte* map_slot(int fd, size_t size, bool writable, const std::string& name) {
  void* p = ::mmap(nullptr, size, writable ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) fail<IoError>("{}: mmap: {}", name, std::strerror(errno));
  (void)::madvise(p, size, writable ? MADV_POPULATE_WRITE : MADV_POPULATE_READ);
  return static_cast<std::byte*>(p);
}

const char* kind_name(SnapshotKind k) {
  return k == SnapshotKind::Own ? "own" : "buddy";
}

uint32_t load_complete(const std::byte* base) {
  return __atomic_load_n(
      reinterpret_cast<const uint32_t*>(base + offsetof(SnapshotSlotHeader, complete)),
      __ATOMIC_ACQUIRE);
}

void store_complete(std::byte* base, uint32_t v) {
  __atomic_store_n(reinterpret_cast<uint32_t*>(base + offsetof(SnapshotSlotHeader, complete)), v,
                   __ATOMIC_RELEASE);
}

// A read-only mapping of an existing object (nullopt when it does not exist).
struct ReadMap {
  const std::byte* base = nullptr;
  size_t size = 0;
  ReadMap() = default;
  ReadMap(const ReadMap&) = delete;
  ReadMap& operator=(const ReadMap&) = delete;
  ReadMap(ReadMap&& o) noexcept : base(o.base), size(o.size) { o.base = nullptr; }
  ~ReadMap() {
    if (base) ::munmap(const_cast<std::byte*>(base), size);
  }
};

std::optional<ReadMap> map_readonly(const std::string& name) {
  const int fd = ::shm_open(name.c_str(), O_RDONLY | O_CLOEXEC, 0);
  if (fd < 0) {
    if (errno == ENOENT) return std::nullopt;
    fail<IoError>("{}: shm_open: {}", name, std::strerror(errno));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || st.st_size < off_t(kSnapshotHeaderBytes)) {
    ::close(fd);
    return ReadMap{};
  }
  ReadMap m;
  try {
    m.base = map_slot(fd, size_t(st.st_size), false, name);
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
  m.size = size_t(st.st_size);
  return m;
}

// Validates one slot; nullopt with a reason when it cannot be used.
std::optional<SnapshotSlotHeader> check_slot(const ReadMap& m, const std::string& name,
                                             uint64_t run_id, int world_size, uint64_t config_hash,
                                             bool check_config, int threads, std::string& why) {
  if (!m.base) {
    why = fmt::format("{}: shorter than its header", name);
    return std::nullopt;
  }
  const uint32_t complete = load_complete(m.base);
  SnapshotSlotHeader h;
  std::memcpy(&h, m.base, sizeof h);
  if (h.magic != kSnapshotMagic || h.version != kSnapshotVersion) {
    why = fmt::format("{}: not a keel snapshot of format {}", name, kSnapshotVersion);
    return std::nullopt;
  }
  if (complete != 1) {
    why = fmt::format("{}: the write of step {} did not finish (torn slot)", name, h.step);
    return std::nullopt;
  }
  if (h.run_id != run_id) {
    why = fmt::format("{}: written by another start of the run (snapshot id {:016x}, now {:016x})",
                      name, h.run_id, run_id);
    return std::nullopt;
  }
  if (h.world_size != world_size) {
    why = fmt::format("{}: written by a world of {} ranks, this one has {}", name, h.world_size,
                      world_size);
    return std::nullopt;
  }
  if (check_config && h.config_hash != config_hash) {
    why = fmt::format("{}: written under another training config", name);
    return std::nullopt;
  }
  if (h.payload_bytes > m.size - kSnapshotHeaderBytes) {
    why = fmt::format("{}: payload of {} bytes runs past the object ({} bytes)", name,
                      h.payload_bytes, m.size);
    return std::nullopt;
  }
  const uint64_t x = piece_digest(m.base + kSnapshotHeaderBytes, h.payload_bytes, threads);
  if (x != h.payload_xxh3) {
    why = fmt::format("{}: checksum mismatch (xxh3 {:016x}, the header says {:016x})", name, x,
                      h.payload_xxh3);
    return std::nullopt;
  }
  return h;
}

std::vector<SnapshotCopy> scan_slots(const std::string& run_dir, int rank, SnapshotKind kind,
                                     uint64_t run_id, int world_size, uint64_t config_hash,
                                     bool check_config, int threads,
                                     std::vector<std::string>* rejected) {
  std::vector<SnapshotCopy> out;
  for (int s = 0; s < 2; ++s) {
    const std::string name = snapshot_segment_name(run_dir, rank, kind, s);
    const auto m = map_readonly(name);
    if (!m || !m->base) continue;  // absent, or created but never written
    std::string why;
    if (auto h = check_slot(*m, name, run_id, world_size, config_hash, check_config, threads, why))
      out.push_back({*h, s});
    else if (rejected)
      rejected->push_back(why);
  }
  return out;
}

}  // namespace

std::string snapshot_segment_name(const std::string& run_dir, int rank, SnapshotKind kind,
                                  int slot) {
  std::error_code ec;
  fs::path abs = fs::absolute(run_dir, ec);
  if (ec) abs = run_dir;
  const std::string p = abs.lexically_normal().string();
  std::string trimmed = p;
  while (trimmed.size() > 1 && trimmed.back() == '/') trimmed.pop_back();
  return fmt::format("/keel-{:016x}-r{}-{}-{}", XXH3_64bits(trimmed.data(), trimmed.size()), rank,
                     kind_name(kind), slot);
}

uint64_t read_snapshot_run_id(const std::string& run_dir) {
  const std::string path = (fs::path(run_dir) / kSnapshotRunIdFile).string();
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return 0;
  const std::string text = io::read_file_bytes(path);
  try {
    return std::stoull(text, nullptr, 16);
  } catch (const std::exception&) {
    fail<IoError>("{}: expected 16 hex digits, got '{}'", path, text);
  }
}

uint64_t new_snapshot_run_id(const std::string& run_dir) {
  std::random_device rd;
  uint64_t id = 0;
  while (id == 0) id = (uint64_t(rd()) << 32) ^ uint64_t(rd());
  io::make_dirs(run_dir);
  io::write_file_atomic((fs::path(run_dir) / kSnapshotRunIdFile).string(),
                        fmt::format("{:016x}\n", id));
  return id;
}

SnapshotStore::SnapshotStore(std::string run_dir, int rank)
    : run_dir_(std::move(run_dir)), rank_(rank) {}

SnapshotStore::~SnapshotStore() {
  for (auto& k : maps_)
    for (auto& m : k) unmap(m);
}

void SnapshotStore::unmap(Mapping& m) {
  if (m.base) ::munmap(m.base, m.size);
  if (m.fd >= 0) ::close(m.fd);
  m = Mapping{};
}

SnapshotStore::Mapping& SnapshotStore::writable(SnapshotKind kind, int slot) {
  Mapping& m = maps_[int(kind)][slot];
  if (m.fd >= 0) return m;
  const std::string name = snapshot_segment_name(run_dir_, rank_, kind, slot);
  m.fd = ::shm_open(name.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (m.fd < 0) fail<IoError>("{}: shm_open: {}", name, std::strerror(errno));
  struct stat st {};
  if (::fstat(m.fd, &st) != 0) fail<IoError>("{}: fstat: {}", name, std::strerror(errno));
  m.size = size_t(st.st_size);
  if (m.size > 0) {
    m.base = map_slot(m.fd, m.size, true, name);
  }
  return m;
}

std::vector<SnapshotCopy> SnapshotStore::scan(SnapshotKind kind, uint64_t run_id, int world_size,
                                              uint64_t config_hash,
                                              std::vector<std::string>* rejected) const {
  return scan_slots(run_dir_, rank_, kind, run_id, world_size, config_hash, true, threads_,
                    rejected);
}

std::span<const std::byte> SnapshotStore::payload(const SnapshotCopy& c) const {
  auto& self = const_cast<SnapshotStore&>(*this);
  Mapping& m = self.writable(c.kind(), c.slot);
  const std::string name = snapshot_segment_name(run_dir_, rank_, c.kind(), c.slot);
  SnapshotSlotHeader h;
  if (!m.base || m.size < kSnapshotHeaderBytes)
    fail<CheckpointError>("{}: the snapshot of step {} is gone", name, c.header.step);
  std::memcpy(&h, m.base, sizeof h);
  if (load_complete(m.base) != 1 || h.step != c.header.step ||
      h.payload_xxh3 != c.header.payload_xxh3 || h.payload_bytes > m.size - kSnapshotHeaderBytes)
    fail<CheckpointError>("{}: the snapshot of step {} changed since it was checked", name,
                          c.header.step);
  return {m.base + kSnapshotHeaderBytes, size_t(h.payload_bytes)};
}

int SnapshotStore::write(SnapshotKind kind, SnapshotSlotHeader header, size_t payload_bytes,
                         const std::function<void(std::span<std::byte>)>& fill) {
  return write(kind, header, payload_bytes,
               [&](std::span<std::byte> out, const FinalThrough&) { fill(out); });
}

int SnapshotStore::write(
    SnapshotKind kind, SnapshotSlotHeader header, size_t payload_bytes,
    const std::function<void(std::span<std::byte>, const FinalThrough&)>& fill) {
  return write_digested(kind, header, payload_bytes, [&](std::span<std::byte> out) {
    PieceDigester digest(out.data(), out.size());
    fill(out, [&](size_t n) { digest.through(n); });
    return digest.finish();
  });
}

int SnapshotStore::write(SnapshotKind kind, SnapshotSlotHeader header, size_t payload_bytes,
                         std::span<const CopySegment> segments,
                         const std::function<void()>& halfway) {
  return write_digested(kind, header, payload_bytes, [&](std::span<std::byte> out) {
    return copy_and_digest(out, segments, threads_, halfway);
  });
}

int SnapshotStore::write_digested(
    SnapshotKind kind, SnapshotSlotHeader header, size_t payload_bytes,
    const std::function<uint64_t(std::span<std::byte>)>& fill_and_digest) {
  // The slot to write: not the one holding the newest complete snapshot.
  int slot = 0;
  int64_t newest = -1;
  for (int s = 0; s < 2; ++s) {
    const Mapping& m = writable(kind, s);
    if (!m.base || m.size < kSnapshotHeaderBytes || load_complete(m.base) != 1) continue;
    SnapshotSlotHeader h;
    std::memcpy(&h, m.base, sizeof h);
    if (h.magic == kSnapshotMagic && h.step > newest) {
      newest = h.step;
      slot = 1 - s;
    }
  }
  Mapping& m = writable(kind, slot);
  const std::string name = snapshot_segment_name(run_dir_, rank_, kind, slot);
  const size_t need = kSnapshotHeaderBytes + payload_bytes;
  if (m.size < need) {
    // Grown with room to spare: health state and manifests vary a little in size.
    const size_t size = (need + need / 8 + 4095) / 4096 * 4096;
    if (m.base) ::munmap(m.base, m.size);
    m.base = nullptr;
    // Reserved, not only sized: tmpfs hands out pages on first touch, and a
    // write past a full /dev/shm would be a SIGBUS in the middle of a step.
    if (::ftruncate(m.fd, off_t(size)) != 0)
      fail<IoError>("{}: cannot grow to {} bytes: {}", name, size, std::strerror(errno));
    if (const int rc = ::posix_fallocate(m.fd, 0, off_t(size)); rc != 0)
      fail<IoError>(
          "{}: cannot reserve {} bytes of shared memory for the in-memory snapshot: {} (the "
          "snapshots of a rank take about twice its training state; give /dev/shm more room, or "
          "set resilience.snapshot_every=0 to keep disk checkpoints only)",
          name, size, std::strerror(rc));
    m.base = map_slot(m.fd, size, true, name);
    m.size = size;
  }
  store_complete(m.base, 0);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  header.magic = kSnapshotMagic;
  header.version = kSnapshotVersion;
  header.complete = 0;
  header.holder_rank = rank_;
  header.kind = uint32_t(kind);
  header.payload_bytes = payload_bytes;
  header.payload_xxh3 = 0;
  std::memcpy(m.base, &header, sizeof header);
  const std::span<std::byte> out(m.base + kSnapshotHeaderBytes, payload_bytes);
  const uint64_t x = fill_and_digest(out);
  std::memcpy(m.base + offsetof(SnapshotSlotHeader, payload_xxh3), &x, sizeof x);
  store_complete(m.base, 1);
  return slot;
}

void SnapshotStore::invalidate_except(SnapshotKind kind, int64_t keep_step) {
  for (int s = 0; s < 2; ++s) {
    Mapping& m = writable(kind, s);
    if (!m.base || m.size < kSnapshotHeaderBytes) continue;
    SnapshotSlotHeader h;
    std::memcpy(&h, m.base, sizeof h);
    if (h.step != keep_step) store_complete(m.base, 0);
  }
}

uint64_t SnapshotStore::bytes_held() const {
  uint64_t n = 0;
  for (const auto& k : maps_)
    for (const auto& m : k) n += m.size;
  return n;
}

void SnapshotStore::unlink_all() {
  for (auto& k : maps_)
    for (auto& m : k) unmap(m);
  unlink_rank_snapshots(run_dir_, rank_);
}

void unlink_rank_snapshots(const std::string& run_dir, int rank) {
  for (SnapshotKind k : {SnapshotKind::Own, SnapshotKind::Buddy})
    for (int s = 0; s < 2; ++s) {
      const std::string name = snapshot_segment_name(run_dir, rank, k, s);
      if (::shm_unlink(name.c_str()) != 0 && errno != ENOENT)
        fail<IoError>("{}: shm_unlink: {}", name, std::strerror(errno));
    }
}

void unlink_run_snapshots(const std::string& run_dir) {
  // The name of rank 0's first slot without its "r0-own-0" tail is the run's prefix.
  std::string prefix = snapshot_segment_name(run_dir, 0, SnapshotKind::Own, 0);
  prefix = prefix.substr(1, prefix.size() - std::string("r0-own-0").size() - 1);
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/dev/shm", ec)) {
    const std::string name = e.path().filename().string();
    if (!name.starts_with(prefix)) continue;
    if (::shm_unlink(("/" + name).c_str()) != 0 && errno != ENOENT)
      fail<IoError>("/{}: shm_unlink: {}", name, std::strerror(errno));
  }
}

SnapshotRestorePlan plan_snapshot_restore(
    const std::vector<std::vector<SnapshotCopy>>& held,
    const std::vector<std::pair<uint64_t, uint64_t>>& needed) {
  const int world = int(held.size());
  SnapshotRestorePlan plan;
  std::set<int64_t, std::greater<>> steps;
  for (const auto& h : held)
    for (const auto& c : h) steps.insert(c.header.step);
  if (steps.empty()) {
    plan.why_not = "no complete snapshot in memory";
    return plan;
  }
  auto covers = [](const SnapshotCopy& c, std::pair<uint64_t, uint64_t> r) {
    return r.first >= r.second ||
           (c.header.moment_begin <= r.first && r.second <= c.header.moment_end);
  };
  for (int64_t s : steps) {
    std::vector<int> common(size_t(world), -1);
    std::vector<SnapshotRestorePlan::Source> moments(static_cast<size_t>(world));
    std::string why;
    int any_own = -1;
    for (int r = 0; r < world && any_own < 0; ++r)
      for (const auto& c : held[size_t(r)])
        if (c.header.step == s && c.kind() == SnapshotKind::Own) any_own = r;
    if (any_own < 0) why = fmt::format("no rank holds its own snapshot of step {}", s);
    for (int r = 0; r < world && why.empty(); ++r) {
      common[size_t(r)] = any_own;
      const SnapshotCopy* pick = nullptr;
      int pick_holder = -1;
      auto consider = [&](int holder, SnapshotKind kind) {
        for (const auto& c : held[size_t(holder)])
          if (!pick && c.header.step == s && c.kind() == kind && covers(c, needed[size_t(r)])) {
            pick = &c;
            pick_holder = holder;
          }
      };
      for (const auto& c : held[size_t(r)])
        if (c.header.step == s && c.kind() == SnapshotKind::Own) common[size_t(r)] = r;
      // Its own copy first (no transfer), then its buddy's, then anyone's.
      consider(r, SnapshotKind::Own);
      consider((r + 1) % world, SnapshotKind::Buddy);
      for (int h = 0; h < world; ++h) {
        consider(h, SnapshotKind::Own);
        consider(h, SnapshotKind::Buddy);
      }
      if (!pick) {
        why = fmt::format(
            "no copy of rank {}'s optimizer state (parameters {}..{}) at step {}: its own "
            "snapshot and the buddy copy on rank {} are both missing",
            r, needed[size_t(r)].first, needed[size_t(r)].second, s, (r + 1) % world);
        break;
      }
      moments[size_t(r)] = {pick_holder, pick->kind(), pick->slot};
    }
    if (why.empty()) {
      plan.step = s;
      plan.common_from = std::move(common);
      plan.moments_from = std::move(moments);
      plan.why_not.clear();
      return plan;
    }
    if (plan.why_not.empty()) plan.why_not = why;
  }
  return plan;
}

int64_t newest_restorable_snapshot_step(const std::string& run_dir, int world_size) {
  if (world_size < 1) return 0;
  try {
    const uint64_t id = read_snapshot_run_id(run_dir);
    if (id == 0) return 0;
    std::vector<std::vector<SnapshotCopy>> held(static_cast<size_t>(world_size));
    uint64_t n_params = 0;
    for (int r = 0; r < world_size; ++r)
      for (SnapshotKind k : {SnapshotKind::Own, SnapshotKind::Buddy})
        for (const auto& c : scan_slots(run_dir, r, k, id, world_size, 0, false, 1, nullptr)) {
          held[size_t(r)].push_back(c);
          n_params = std::max(n_params, c.header.n_params);
        }
    // Each rank's range from any copy of its shard; with none left, all of
    // them (only a copy of every parameter's moments can stand in then).
    std::vector<std::pair<uint64_t, uint64_t>> needed(size_t(world_size), {0, n_params});
    for (const auto& h : held)
      for (const auto& c : h)
        if (c.header.shard_rank >= 0 && c.header.shard_rank < world_size)
          needed[size_t(c.header.shard_rank)] = {c.header.moment_begin, c.header.moment_end};
    return plan_snapshot_restore(held, needed).step;
  } catch (const Error&) {
    return 0;  // unreadable: the ranks will not use it either
  }
}

}  // namespace keel::resilience
