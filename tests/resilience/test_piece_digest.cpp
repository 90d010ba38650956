// The piecewise checksum of snapshots and SDC seals: the same value whatever
// the thread count and whether fed at once, serially or by a copy; a copy
// lands every segment byte for byte and leaves gaps alone; one flipped bit
// changes the value; a snapshot slot written by several threads is accepted
// and a slot changed afterwards is refused.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "checkpoint_test_util.h"
#include "resilience/piece_digest.h"
#include "resilience/snapshot_store.h"

using namespace keel;
using namespace keel::resilience;
using keel::resilience::testing::TempDir;

namespace {

std::vector<std::byte> random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::byte> v(n);
  for (auto& b : v) b = std::byte(rng() & 0xff);
  return v;
}

const size_t kSizes[] = {
    0, 1, kDigestPiece - 1, kDigestPiece, kDigestPiece + 1, 3 * kDigestPiece + 777};

}  // namespace

TEST(PieceDigest, SameValueForEveryThreadCountAndSerialFeed) {
  for (size_t n : kSizes) {
    const auto v = random_bytes(n, uint32_t(n) + 1);
    const uint64_t one = piece_digest(v.data(), n, 1);
    for (int t : {2, 3, 8}) EXPECT_EQ(piece_digest(v.data(), n, t), one) << n << " bytes, " << t;
    // Fed in uneven steps, some of them backwards or repeated.
    PieceDigester d(v.data(), n);
    std::mt19937 rng(7);
    for (size_t at = 0; at < n; at += rng() % (kDigestPiece / 3) + 1) {
      d.through(at);
      d.through(at / 2);
    }
    EXPECT_EQ(d.finish(), one) << n << " bytes";
  }
  // Distinct sizes of the same prefix differ, the empty buffer included.
  const auto v = random_bytes(kDigestPiece + 1, 3);
  EXPECT_NE(piece_digest(v.data(), kDigestPiece, 1), piece_digest(v.data(), kDigestPiece + 1, 1));
  EXPECT_NE(piece_digest(v.data(), 0, 1), piece_digest(v.data(), 1, 1));
}

TEST(PieceDigest, OneFlippedBitChangesTheValue) {
  auto v = random_bytes(2 * kDigestPiece + 100, 11);
  const uint64_t h = piece_digest(v.data(), v.size(), 2);
  for (size_t at : {size_t(0), kDigestPiece - 1, kDigestPiece, v.size() - 1})
    for (int bit : {0, 7}) {
      v[at] ^= std::byte(1 << bit);
      EXPECT_NE(piece_digest(v.data(), v.size(), 2), h) << at << " bit " << bit;
      v[at] ^= std::byte(1 << bit);
    }
  EXPECT_EQ(piece_digest(v.data(), v.size(), 2), h);
}

TEST(PieceDigest, CopyLandsEverySegmentAndDigestsTheResult) {
  // Segments that cross piece boundaries, a gap between them, and one empty.
  const size_t n = 3 * kDigestPiece + 5000;
  const auto a = random_bytes(kDigestPiece + 3, 21), b = random_bytes(kDigestPiece * 2 - 9, 22);
  const std::vector<CopySegment> segs = {
      {10, a}, {10 + a.size() + 64, {}}, {10 + a.size() + 64, b}};
  for (int threads : {1, 2, 5}) {
    std::vector<std::byte> out(n, std::byte(0x5a));
    int halfway = 0;
    const uint64_t h = copy_and_digest(out, segs, threads, [&] { ++halfway; });
    EXPECT_EQ(halfway, 1);
    EXPECT_EQ(std::memcmp(out.data() + 10, a.data(), a.size()), 0) << threads;
    EXPECT_EQ(std::memcmp(out.data() + 10 + a.size() + 64, b.data(), b.size()), 0) << threads;
    // Bytes no segment covers are left as they were.
    EXPECT_EQ(out[0], std::byte(0x5a));
    EXPECT_EQ(out[10 + a.size() + 63], std::byte(0x5a));
    EXPECT_EQ(out[n - 1], std::byte(0x5a));
    EXPECT_EQ(h, piece_digest(out.data(), n, 1)) << threads;
  }
}

TEST(PieceDigest, SnapshotWrittenByThreadsIsAcceptedAndAChangeIsRefused) {
  TempDir d;
  SnapshotStore s(d.path(), 0);
  s.set_threads(2);
  const auto a = random_bytes(2 * kDigestPiece + 17, 31);
  const CopySegment whole{0, a};
  SnapshotSlotHeader h;
  h.step = 4;
  h.world_size = 1;
  h.run_id = 77;
  s.write(SnapshotKind::Own, h, a.size(), {&whole, 1});
  std::vector<std::string> why;
  auto copies = s.scan(SnapshotKind::Own, 77, 1, 0, &why);
  ASSERT_EQ(copies.size(), 1u) << (why.empty() ? "" : why[0]);
  const auto payload = s.payload(copies[0]);
  ASSERT_EQ(payload.size(), a.size());
  EXPECT_EQ(std::memcmp(payload.data(), a.data(), a.size()), 0);
  // A byte of the last piece changed after the write: refused, with the reason.
  const_cast<std::byte&>(payload[a.size() - 3]) ^= std::byte(0x10);
  why.clear();
  copies = s.scan(SnapshotKind::Own, 77, 1, 0, &why);
  EXPECT_TRUE(copies.empty());
  ASSERT_EQ(why.size(), 1u);
  EXPECT_NE(why[0].find("checksum mismatch"), std::string::npos) << why[0];
  s.unlink_all();
}
