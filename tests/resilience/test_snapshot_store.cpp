// In-memory snapshot slots: writes alternate between the two slots, a write
// cut short (torn) or a payload changed afterwards (checksum) is never
// returned, slots of another start of the run, world size or config are
// refused with the reason, the restore plan finds a copy of every shard or
// says which one is missing, and the state image round-trips.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>

#include "checkpoint_test_util.h"
#include "core/error.h"
#include "resilience/snapshot_store.h"
#include "resilience/state_image.h"

using namespace keel;
using namespace keel::resilience;
using keel::resilience::testing::TempDir;

namespace {

constexpr uint64_t kRun = 0x1234, kConfig = 0x99;

SnapshotSlotHeader header(int64_t step, int world = 2) {
  SnapshotSlotHeader h;
  h.step = step;
  h.optimizer_t = step;
  h.world_size = world;
  h.moment_begin = 0;
  h.moment_end = 4;
  h.n_params = 4;
  h.run_id = kRun;
  h.config_hash = kConfig;
  return h;
}

void write_step(SnapshotStore& s, int64_t step, SnapshotKind kind = SnapshotKind::Own) {
  s.write(kind, header(step), 1000,
          [&](std::span<std::byte> out) { std::memset(out.data(), int(step), out.size()); });
}

std::vector<int64_t> steps_of(const std::vector<SnapshotCopy>& v) {
  std::vector<int64_t> out;
  for (const auto& c : v) out.push_back(c.header.step);
  std::sort(out.begin(), out.end());
  return out;
}

// Cleans the segments of a temporary run directory.
struct Segments {
  std::string dir;
  int ranks;
  ~Segments() {
    for (int r = 0; r < ranks; ++r) unlink_rank_snapshots(dir, r);
  }
};

}  // namespace

TEST(SnapshotStore, WritesAlternateAndKeepTheNewestTwo) {
  TempDir d;
  Segments seg{d.path(), 1};
  SnapshotStore s(d.path(), 0);
  write_step(s, 1);
  write_step(s, 2);
  auto got = s.scan(SnapshotKind::Own, kRun, 2, kConfig, nullptr);
  EXPECT_EQ(steps_of(got), (std::vector<int64_t>{1, 2}));
  int slot_of_2 = -1;
  for (const auto& c : got)
    if (c.header.step == 2) slot_of_2 = c.slot;
  write_step(s, 3);  // replaces step 1, never the newest (2)
  got = s.scan(SnapshotKind::Own, kRun, 2, kConfig, nullptr);
  EXPECT_EQ(steps_of(got), (std::vector<int64_t>{2, 3}));
  for (const auto& c : got) {
    if (c.header.step == 3) {
      EXPECT_NE(c.slot, slot_of_2);
    }
  }
  // The payload is what was written.
  for (const auto& c : got) {
    const auto p = s.payload(c);
    ASSERT_EQ(p.size(), 1000u);
    EXPECT_EQ(int(p[500]), int(c.header.step));
  }
}

TEST(SnapshotStore, TornWriteLeavesThePreviousSnapshot) {
  TempDir d;
  Segments seg{d.path(), 1};
  SnapshotStore s(d.path(), 0);
  write_step(s, 7);
  // A crash in the middle of the next write: the fill never returns.
  EXPECT_THROW(s.write(SnapshotKind::Own, header(8), 1000,
                       [](std::span<std::byte> out) {
                         std::memset(out.data(), 8, out.size() / 2);
                         throw std::runtime_error("killed");
                       }),
               std::runtime_error);
  std::vector<std::string> why;
  SnapshotStore reader(d.path(), 0);
  const auto got = reader.scan(SnapshotKind::Own, kRun, 2, kConfig, &why);
  EXPECT_EQ(steps_of(got), (std::vector<int64_t>{7}));
  ASSERT_EQ(why.size(), 1u);
  EXPECT_NE(why[0].find("did not finish (torn slot)"), std::string::npos) << why[0];
  // The next write goes to the torn slot again, not over step 7.
  write_step(s, 8);
  EXPECT_EQ(steps_of(reader.scan(SnapshotKind::Own, kRun, 2, kConfig, nullptr)),
            (std::vector<int64_t>{7, 8}));
}

TEST(SnapshotStore, ChangedPayloadFailsTheChecksum) {
  TempDir d;
  Segments seg{d.path(), 1};
  SnapshotStore s(d.path(), 0);
  write_step(s, 3);
  const std::string name = snapshot_segment_name(d.path(), 0, SnapshotKind::Own, 0);
  const int fd = ::shm_open(name.c_str(), O_RDWR, 0);
  ASSERT_GE(fd, 0);
  void* p = ::mmap(nullptr, kSnapshotHeaderBytes + 1000, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ASSERT_NE(p, MAP_FAILED);
  static_cast<unsigned char*>(p)[kSnapshotHeaderBytes + 10] ^= 0x10;  // one flipped bit
  ::munmap(p, kSnapshotHeaderBytes + 1000);
  ::close(fd);
  std::vector<std::string> why;
  EXPECT_TRUE(s.scan(SnapshotKind::Own, kRun, 2, kConfig, &why).empty());
  ASSERT_EQ(why.size(), 1u);
  EXPECT_NE(why[0].find("checksum mismatch"), std::string::npos) << why[0];
}

TEST(SnapshotStore, RefusesAnotherRunWorldOrConfig) {
  TempDir d;
  Segments seg{d.path(), 1};
  SnapshotStore s(d.path(), 0);
  write_step(s, 5);
  std::vector<std::string> why;
  EXPECT_TRUE(s.scan(SnapshotKind::Own, kRun + 1, 2, kConfig, &why).empty());
  EXPECT_TRUE(s.scan(SnapshotKind::Own, kRun, 3, kConfig, &why).empty());
  EXPECT_TRUE(s.scan(SnapshotKind::Own, kRun, 2, kConfig + 1, &why).empty());
  ASSERT_EQ(why.size(), 3u);
  EXPECT_NE(why[0].find("another start of the run"), std::string::npos) << why[0];
  EXPECT_NE(why[1].find("world of 2 ranks, this one has 3"), std::string::npos) << why[1];
  EXPECT_NE(why[2].find("another training config"), std::string::npos) << why[2];
  // Another run directory names other objects: nothing there.
  TempDir other;
  EXPECT_TRUE(
      SnapshotStore(other.path(), 0).scan(SnapshotKind::Own, kRun, 2, kConfig, nullptr).empty());
  // Unlinked: gone.
  s.unlink_all();
  EXPECT_TRUE(
      SnapshotStore(d.path(), 0).scan(SnapshotKind::Own, kRun, 2, kConfig, nullptr).empty());
}

TEST(SnapshotStore, RestorePlanNeedsACopyOfEveryShard) {
  // Three ranks under ZeRO-1: rank r keeps the moments of parameters [2r, 2r+2)
  // and rank r+1 keeps a buddy copy of them.
  const std::vector<std::pair<uint64_t, uint64_t>> needed = {{0, 2}, {2, 4}, {4, 6}};
  auto copy = [](int holder, SnapshotKind k, int shard, int64_t step) {
    SnapshotCopy c;
    c.header.step = step;
    c.header.kind = uint32_t(k);
    c.header.holder_rank = holder;
    c.header.shard_rank = shard;
    c.header.moment_begin = uint64_t(2 * shard);
    c.header.moment_end = uint64_t(2 * shard + 2);
    return c;
  };
  std::vector<std::vector<SnapshotCopy>> held(3);
  for (int r = 0; r < 3; ++r)
    for (int64_t s : {9, 10}) {
      held[size_t(r)].push_back(copy(r, SnapshotKind::Own, r, s));
      held[size_t(r)].push_back(copy(r, SnapshotKind::Buddy, (r + 2) % 3, s));
    }
  auto plan = plan_snapshot_restore(held, needed);
  EXPECT_EQ(plan.step, 10);
  for (int r = 0; r < 3; ++r) {
    EXPECT_EQ(plan.moments_from[size_t(r)].holder, r);
    EXPECT_EQ(plan.common_from[size_t(r)], r);
  }
  // Rank 1's machine is lost: its shard comes from the buddy copy on rank 2,
  // its parameters from rank 0's own snapshot.
  auto lost1 = held;
  lost1[1].clear();
  plan = plan_snapshot_restore(lost1, needed);
  EXPECT_EQ(plan.step, 10);
  EXPECT_EQ(plan.moments_from[1].holder, 2);
  EXPECT_EQ(plan.moments_from[1].kind, SnapshotKind::Buddy);
  EXPECT_EQ(plan.common_from[1], 0);
  // Rank 2's buddy copy of step 10 did not arrive: step 9 is the newest whole one.
  auto late = lost1;
  std::erase_if(late[2], [](const SnapshotCopy& c) {
    return c.kind() == SnapshotKind::Buddy && c.header.step == 10;
  });
  EXPECT_EQ(plan_snapshot_restore(late, needed).step, 9);
  // Rank 1 and its buddy rank 2 both lost: no copy of rank 1's shard.
  auto lost12 = lost1;
  lost12[2].clear();
  plan = plan_snapshot_restore(lost12, needed);
  EXPECT_EQ(plan.step, 0);
  EXPECT_NE(plan.why_not.find("rank 1's optimizer state"), std::string::npos) << plan.why_not;
  // Without ZeRO-1 every own snapshot holds every moment: one survivor is enough.
  std::vector<std::vector<SnapshotCopy>> full(3);
  auto own_full = copy(2, SnapshotKind::Own, 2, 4);
  own_full.header.moment_begin = 0;
  own_full.header.moment_end = 6;
  full[2].push_back(own_full);
  plan = plan_snapshot_restore(full, {{0, 6}, {0, 6}, {0, 6}});
  EXPECT_EQ(plan.step, 4);
  EXPECT_EQ(plan.moments_from[0].holder, 2);
}

TEST(SnapshotStore, NewestRestorableStepForTheSupervisor) {
  TempDir d;
  Segments seg{d.path(), 2};
  EXPECT_EQ(newest_restorable_snapshot_step(d.path(), 2), 0);  // no snapshot id yet
  const uint64_t id = new_snapshot_run_id(d.path());
  EXPECT_EQ(read_snapshot_run_id(d.path()), id);
  SnapshotStore r0(d.path(), 0), r1(d.path(), 1);
  auto h = [&](int64_t step, int shard) {
    SnapshotSlotHeader x = header(step);
    x.run_id = id;
    x.shard_rank = shard;
    x.moment_begin = uint64_t(2 * shard);
    x.moment_end = uint64_t(2 * shard + 2);
    return x;
  };
  auto fill = [](std::span<std::byte> out) { std::memset(out.data(), 1, out.size()); };
  r0.write(SnapshotKind::Own, h(6, 0), 64, fill);
  r1.write(SnapshotKind::Own, h(6, 1), 64, fill);
  r0.write(SnapshotKind::Own, h(7, 0), 64, fill);
  EXPECT_EQ(newest_restorable_snapshot_step(d.path(), 2), 6);  // rank 1's step 7 is missing
  r1.write(SnapshotKind::Own, h(7, 1), 64, fill);
  EXPECT_EQ(newest_restorable_snapshot_step(d.path(), 2), 7);
  EXPECT_EQ(newest_restorable_snapshot_step(d.path(), 3), 0);  // another world size
  new_snapshot_run_id(d.path());                               // a fresh start
  EXPECT_EQ(newest_restorable_snapshot_step(d.path(), 2), 0);
}

TEST(StateImage, RoundTripsEveryGroup) {
  CheckpointState st;
  st.manifest.step = 12;
  st.manifest.optimizer_t = 11;
  st.manifest.health = {{"x", 1}};
  st.params.push_back({"w", Tensor::from_f32({1, 2, 3, 4, 5, 6}, Shape{2, 3})});
  st.optimizer.push_back({"exp_avg.w", Tensor::from_f32({7, 8}, Shape{2})});
  st.model_state.push_back({"bias_state", Tensor::from_f32({9}, Shape{1})});
  const StateImagePlan plan = plan_state_image(st);
  std::vector<std::byte> buf(plan.bytes);
  int halfway = 0;
  write_state_image(st, plan, buf, [&] { ++halfway; });
  EXPECT_EQ(halfway, 1);
  const StateImageView v = parse_state_image(buf, "test image");
  EXPECT_EQ(v.manifest.step, 12);
  EXPECT_EQ(v.manifest.optimizer_t, 11);
  EXPECT_EQ(v.manifest.health["x"], 1);
  const StateImageEntry* w = v.find(kImageParams, "w");
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->shape, (Shape{2, 3}));
  float f[6];
  std::memcpy(f, w->bytes.data(), sizeof f);
  EXPECT_EQ(f[5], 6.f);
  ASSERT_NE(v.find(kImageOptimizer, "exp_avg.w"), nullptr);
  EXPECT_EQ(v.find(kImageOptimizer, "w"), nullptr);
  // A cut image is refused with its name.
  try {
    parse_state_image(std::span<const std::byte>(buf).first(plan.data_offset + 8), "cut image");
    FAIL() << "a cut image parsed";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("cut image"), std::string::npos) << e.what();
  }
}

TEST(StateImage, PiecewiseWriteChecksumsWhatLandsInTheSlot) {
  // Tensors of odd sizes (pieces of 256 KiB and a partial one, padding
  // between tensors) written through the store's checksumming road: scan()
  // re-hashes the slot, so a checksum of bytes other than those stored
  // would refuse it.
  TempDir d;
  Segments seg{d.path(), 1};
  SnapshotStore s(d.path(), 0);
  CheckpointState st;
  st.manifest.step = 5;
  const int64_t sizes[] = {3, 70001, 131072 + 5, 1000};
  for (int i = 0; i < 4; ++i) {
    std::vector<float> v(size_t(sizes[i]));
    for (size_t k = 0; k < v.size(); ++k) v[k] = float(k % 977) * 0.5f + float(i);
    st.params.push_back({"p" + std::to_string(i), Tensor::from_f32(v, Shape{sizes[i]})});
  }
  const StateImagePlan plan = plan_state_image(st);
  // The same layout reuses the tensor table; the header still carries the new step.
  st.manifest.step = 6;
  const StateImagePlan again = plan_state_image(st, &plan);
  EXPECT_EQ(again.tensor_table, plan.tensor_table);
  EXPECT_NE(again.header, plan.header);
  SnapshotSlotHeader h = header(6);
  s.write(SnapshotKind::Own, h, again.bytes,
          [&](std::span<std::byte> out, const SnapshotStore::FinalThrough& through) {
            write_state_image(st, again, out, {}, through);
          });
  std::vector<std::string> why;
  const auto copies = s.scan(SnapshotKind::Own, kRun, 2, kConfig, &why);
  ASSERT_EQ(copies.size(), 1u) << (why.empty() ? "" : why[0]);
  const StateImageView v = parse_state_image(s.payload(copies[0]), "slot");
  EXPECT_EQ(v.manifest.step, 6);
  for (int i = 0; i < 4; ++i) {
    const StateImageEntry* e = v.find(kImageParams, "p" + std::to_string(i));
    ASSERT_NE(e, nullptr);
    ASSERT_EQ(e->bytes.size(), st.params[size_t(i)].tensor.nbytes());
    EXPECT_EQ(std::memcmp(e->bytes.data(), st.params[size_t(i)].tensor.raw(), e->bytes.size()), 0)
        << i;
  }
}

TEST(SnapshotStore, UnlinkRunRemovesEveryRankSlot) {
  TempDir d, other;
  Segments seg{d.path(), 4}, seg2{other.path(), 1};
  for (int r : {0, 3}) {
    SnapshotStore s(d.path(), r);
    write_step(s, 1);
    write_step(s, 1, SnapshotKind::Buddy);
  }
  SnapshotStore keep(other.path(), 0);
  write_step(keep, 2);
  unlink_run_snapshots(d.path());
  for (int r : {0, 3})
    EXPECT_TRUE(
        SnapshotStore(d.path(), r).scan(SnapshotKind::Own, kRun, 2, kConfig, nullptr).empty());
  // Another run's slots stay.
  EXPECT_EQ(keep.scan(SnapshotKind::Own, kRun, 2, kConfig, nullptr).size(), 1u);
}

TEST(StateImage, SegmentsLayTheSameBytesAsTheWriter) {
  // What copy_and_digest lands from state_image_segments is the image
  // write_state_image writes, header length and padding included.
  CheckpointState st;
  st.manifest.step = 3;
  st.params.push_back({"w", Tensor::from_f32({1, 2, 3}, Shape{3})});
  st.optimizer.push_back(
      {"exp_avg.w", Tensor::from_f32(std::vector<float>(70001, 0.25f), Shape{70001})});
  st.model_state.push_back({"s", Tensor::from_f32({9}, Shape{1})});
  const StateImagePlan plan = plan_state_image(st);
  std::vector<std::byte> a(plan.bytes), b(plan.bytes);
  write_state_image(st, plan, a);
  const std::vector<CopySegment> segs = state_image_segments(st, plan);
  const uint64_t h = copy_and_digest(b, segs, 2);
  EXPECT_EQ(a, b);
  EXPECT_EQ(h, piece_digest(a.data(), a.size(), 1));
  EXPECT_EQ(parse_state_image(b, "segments").manifest.step, 3);
}
