// The ZeRO-1 partition: contiguous, covering, balanced to the nearest
// parameter boundary, and a pure function of the sizes and the world.
#include <gtest/gtest.h>

#include "core/error.h"
#include "dist/zero_partition.h"

using keel::dist::zero_partition;

TEST(ZeroPartition, CoversEveryParameterOnceInOrder) {
  const std::vector<int64_t> n = {10, 10, 10, 10, 10, 10};
  EXPECT_EQ(zero_partition(n, 1), (std::vector<size_t>{0, 6}));
  EXPECT_EQ(zero_partition(n, 2), (std::vector<size_t>{0, 3, 6}));
  EXPECT_EQ(zero_partition(n, 3), (std::vector<size_t>{0, 2, 4, 6}));
}

TEST(ZeroPartition, NearestBoundaryToEqualShares) {
  // total 100; halves at 50: prefix sums 0, 40, 45, 100 -> boundary 2 (45 is closest).
  EXPECT_EQ(zero_partition({40, 5, 55}, 2), (std::vector<size_t>{0, 2, 3}));
  // A parameter bigger than a share: one rank gets it alone, another nothing.
  EXPECT_EQ(zero_partition({1, 1000, 1}, 3), (std::vector<size_t>{0, 1, 2, 3}));
  EXPECT_EQ(zero_partition({1000, 1, 1}, 4), (std::vector<size_t>{0, 0, 1, 1, 3}));
}

TEST(ZeroPartition, MoreRanksThanParametersAndEmpty) {
  const auto b = zero_partition({5, 5}, 4);
  ASSERT_EQ(b.size(), 5u);
  EXPECT_EQ(b.front(), 0u);
  EXPECT_EQ(b.back(), 2u);
  for (size_t r = 0; r + 1 < b.size(); ++r) EXPECT_LE(b[r], b[r + 1]);
  EXPECT_EQ(zero_partition({}, 2), (std::vector<size_t>{0, 0, 0}));
  EXPECT_THROW(zero_partition({1}, 0), keel::DistError);
}
