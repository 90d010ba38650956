#include "resilience/snapshot_replicator.h"

#include <algorithm>
#include <cstring>
#include <tuple>

#include <fmt/format.h>

// XXH3 dispatched at run time to the widest vectors the CPU has: the inlined
// build is SSE2 only (4 GB/s here, against 60 in cache with AVX-512).
#include <xxh_x86dispatch.h>

#include "core/error.h"
#include "core/log.h"
#include "resilience/checkpoint_manifest.h"
#include "resilience/state_image.h"

namespace keel::resilience {

namespace {

// One held copy as every rank sees it in the decision.
struct CopyRecord {
  int64_t step = -1;  // -1: empty entry
  int64_t optimizer_t = 0;
  uint32_t kind = 0, slot = 0;
  int32_t shard_rank = 0, pad = 0;
  uint64_t moment_begin = 0, moment_end = 0;
  uint64_t xxh3 = 0;
};
struct Holdings {
  int64_t disk_step = 0;
  CopyRecord copies[4];
};

std::string copy_name(int holder, SnapshotKind k) {
  return fmt::format("{}:{}", k == SnapshotKind::Own ? "own" : "buddy", holder);
}

// Sends holder's bytes to every rank (sizes first); `mine` is used on the holder.
std::vector<std::byte> broadcast_bytes(dist::Communicator& c, int holder,
                                       std::span<const std::byte> mine) {
  uint64_t n = c.rank() == holder ? mine.size() : 0;
  c.broadcast(std::as_writable_bytes(std::span<uint64_t>(&n, 1)), holder);
  std::vector<std::byte> buf(static_cast<size_t>(n));
  if (c.rank() == holder) std::memcpy(buf.data(), mine.data(), size_t(n));
  c.broadcast(buf, holder);
  return buf;
}

}  // namespace

uint64_t snapshot_config_hash(const nlohmann::json& config_map, const std::string& tokenizer_id) {
  nlohmann::json kept = nlohmann::json::object();
  for (auto it = config_map.begin(); it != config_map.end(); ++it)
    if (!config_key_may_differ(it.key())) kept[it.key()] = it.value();
  const std::string s = kept.dump() + "\n" + tokenizer_id;
  return XXH3_64bits(s.data(), s.size());
}

SnapshotReplicator::SnapshotReplicator(SnapshotOptions opt)
    : opt_(std::move(opt)), store_(opt_.run_dir, opt_.rank) {
  store_.set_threads(opt_.threads);
  if (opt_.shards.size() != size_t(opt_.world_size))
    fail("SnapshotReplicator: {} shard ranges for a world of {}", opt_.shards.size(),
         opt_.world_size);
  if (opt_.world_size > 1 && !opt_.comm)
    fail("SnapshotReplicator: a world of {} ranks needs a communicator", opt_.world_size);
}

SnapshotReplicator::~SnapshotReplicator() = default;

bool SnapshotReplicator::sharded() const {
  for (const auto& s : opt_.shards)
    if (s.first != 0 || s.second != opt_.n_params) return true;
  return false;
}

SnapshotDecision SnapshotReplicator::decide(int64_t disk_step, uint64_t run_id) {
  run_id_ = run_id;
  std::vector<std::string> rejected;
  Holdings mine;
  mine.disk_step = disk_step;
  size_t n = 0;
  for (SnapshotKind k : {SnapshotKind::Own, SnapshotKind::Buddy})
    for (const SnapshotCopy& c :
         store_.scan(k, run_id, opt_.world_size, opt_.config_hash, &rejected)) {
      if (n == 4) break;
      CopyRecord& r = mine.copies[n++];
      r.step = c.header.step;
      r.optimizer_t = c.header.optimizer_t;
      r.kind = c.header.kind;
      r.slot = uint32_t(c.slot);
      r.shard_rank = c.header.shard_rank;
      r.moment_begin = c.header.moment_begin;
      r.moment_end = c.header.moment_end;
      r.xxh3 = c.header.payload_xxh3;
    }
  for (const std::string& why : rejected) log().warn("snapshot skipped: {}", why);
  std::vector<Holdings> all =
      opt_.comm ? dist::allgather_value(*opt_.comm, mine) : std::vector<Holdings>{mine};
  int64_t disk = 0;
  std::vector<std::vector<SnapshotCopy>> held(all.size());
  for (size_t r = 0; r < all.size(); ++r) {
    disk = std::max(disk, all[r].disk_step);
    for (const CopyRecord& x : all[r].copies) {
      if (x.step < 0) continue;
      SnapshotCopy c;
      c.slot = int(x.slot);
      c.header.step = x.step;
      c.header.optimizer_t = x.optimizer_t;
      c.header.kind = x.kind;
      c.header.holder_rank = int32_t(r);
      c.header.shard_rank = x.shard_rank;
      c.header.moment_begin = x.moment_begin;
      c.header.moment_end = x.moment_end;
      c.header.payload_xxh3 = x.xxh3;
      held[r].push_back(c);
    }
  }
  std::vector<std::pair<uint64_t, uint64_t>> needed;
  for (const auto& s : opt_.shards) needed.push_back({s.first, s.second});
  SnapshotDecision d;
  d.plan = plan_snapshot_restore(held, needed);
  if (d.plan.step > 0 && d.plan.step > disk) {
    d.step = d.plan.step;
    for (int r = 0; r < opt_.world_size; ++r) {
      const auto& m = d.plan.moments_from[size_t(r)];
      d.copies.push_back({{"rank", r},
                          {"state", copy_name(d.plan.common_from[size_t(r)], SnapshotKind::Own)},
                          {"moments", copy_name(m.holder, m.kind)}});
    }
  } else if (d.plan.step > 0) {
    d.why_not = fmt::format(
        "the newest usable snapshot (step {}) is not newer than the disk "
        "checkpoint of step {}",
        d.plan.step, disk);
  } else {
    d.why_not = d.plan.why_not;
    if (!rejected.empty()) d.why_not += fmt::format(" ({})", rejected.front());
  }
  return d;
}

SnapshotImages SnapshotReplicator::fetch(const SnapshotDecision& d) {
  const int me = opt_.rank;
  // This rank's slot of `kind` at d.step (checked again: it may have changed).
  const auto local = [&](SnapshotKind kind) {
    for (const auto& x : store_.scan(kind, run_id_, opt_.world_size, opt_.config_hash, nullptr))
      if (x.header.step == d.step) return store_.payload(x);
    fail<CheckpointError>("rank {}: its {} snapshot of step {} is gone", me,
                          kind == SnapshotKind::Own ? "own" : "buddy", d.step);
  };
  // Every rank walks the same list, so the broadcasts line up.
  SnapshotImages img;
  for (int r = 0; r < opt_.world_size; ++r) {
    const int h = d.plan.common_from[size_t(r)];
    if (h == r) {
      if (r == me) img.common = local(SnapshotKind::Own);
      continue;
    }
    std::vector<std::byte> got = broadcast_bytes(
        *opt_.comm, h, me == h ? local(SnapshotKind::Own) : std::span<const std::byte>{});
    if (r == me) {
      img.common_buf = std::move(got);
      img.common = img.common_buf;
    }
  }
  for (int r = 0; r < opt_.world_size; ++r) {
    const auto& m = d.plan.moments_from[size_t(r)];
    if (m.holder == r) {
      if (r == me) img.moments = local(m.kind);
      continue;
    }
    std::vector<std::byte> got = broadcast_bytes(
        *opt_.comm, m.holder, me == m.holder ? local(m.kind) : std::span<const std::byte>{});
    if (r == me) {
      img.moments_buf = std::move(got);
      img.moments = img.moments_buf;
    }
  }
  return img;
}

void SnapshotReplicator::restored(int64_t step) {
  store_.invalidate_except(SnapshotKind::Own, step);
  store_.invalidate_except(SnapshotKind::Buddy, step);
}

void SnapshotReplicator::take(const CheckpointState& st) {
  finish_exchange();
  const int64_t step = st.manifest.step;
  const auto [b, e] = shard();
  SnapshotSlotHeader h;
  h.step = step;
  h.optimizer_t = st.manifest.optimizer_t;
  h.world_size = opt_.world_size;
  h.shard_rank = opt_.rank;
  h.moment_begin = b;
  h.moment_end = e;
  h.n_params = opt_.n_params;
  h.run_id = run_id_;
  h.config_hash = opt_.config_hash;
  own_plan_ = plan_state_image(st, &own_plan_);
  const StateImagePlan& plan = own_plan_;
  std::function<void()> halfway;
  if (opt_.halfway) halfway = [&] { opt_.halfway(step); };
  store_.write(SnapshotKind::Own, h, plan.bytes, state_image_segments(st, plan), halfway);
  if (!sharded() || opt_.world_size < 2) return;
  // The shard only this rank holds goes to rank+1: [step][optimizer_t][image].
  CheckpointState part;
  part.optimizer = st.optimizer;
  buddy_plan_ = plan_state_image(part, &buddy_plan_);
  const StateImagePlan& bp = buddy_plan_;
  // The buffers of the last exchange, reused: a fresh one every step costs a
  // zero fill of the shard's size on each side.
  std::vector<std::byte> msg = std::move(send_buf_);
  msg.resize(16 + bp.bytes);
  std::memcpy(msg.data(), &h.step, 8);
  std::memcpy(msg.data() + 8, &h.optimizer_t, 8);
  write_state_image(part, bp, std::span<std::byte>(msg).subspan(16));
  if (buddy_bytes_.empty()) {
    // The message sizes never change within a world: learned once.
    for (uint64_t x : dist::allgather_value(*opt_.comm, uint64_t(msg.size())))
      buddy_bytes_.push_back(size_t(x));
  }
  const int N = opt_.world_size, prev = (opt_.rank + N - 1) % N;
  exchange_ = opt_.comm->start_exchange(std::move(msg), (opt_.rank + 1) % N,
                                        buddy_bytes_[size_t(prev)], prev, std::move(recv_buf_));
}

void SnapshotReplicator::finish_exchange() {
  if (!exchange_) return;
  exchange_->wait();
  const std::span<const std::byte> got = exchange_->received();
  const int N = opt_.world_size, prev = (opt_.rank + N - 1) % N;
  SnapshotSlotHeader h;
  std::memcpy(&h.step, got.data(), 8);
  std::memcpy(&h.optimizer_t, got.data() + 8, 8);
  h.world_size = N;
  h.shard_rank = prev;
  h.moment_begin = opt_.shards[size_t(prev)].first;
  h.moment_end = opt_.shards[size_t(prev)].second;
  h.n_params = opt_.n_params;
  h.run_id = run_id_;
  h.config_hash = opt_.config_hash;
  const auto image = got.subspan(16);
  const CopySegment whole{0, image};
  store_.write(SnapshotKind::Buddy, h, image.size(), {&whole, 1});
  std::tie(send_buf_, recv_buf_) = exchange_->release_buffers();
  exchange_.reset();
}

void SnapshotReplicator::poll() {
  if (exchange_ && exchange_->test()) finish_exchange();
}

void SnapshotReplicator::complete() {
  finish_exchange();
}

void SnapshotReplicator::discard() {
  exchange_.reset();
  store_.unlink_all();
}

}  // namespace keel::resilience
