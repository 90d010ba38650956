#include <gtest/gtest.h>

#include "core/dtype.h"
#include "core/rng.h"

TEST(Rng, SameKeySameNumber) {
  keel::Rng a(1, 2), b(1, 2), c(1, 3);
  EXPECT_EQ(a.u64(7), b.u64(7));
  EXPECT_NE(a.u64(7), c.u64(7));
}
