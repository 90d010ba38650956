// The KV cache pool: its byte limit refuses instead of failing, and memory
// comes back when a sequence goes away.
#include <gtest/gtest.h>

#include "serve/kv_cache.h"

using namespace keel::serve;

TEST(KvCache, LimitRefusesAndReleaseFrees) {
  KvCachePool pool(2, 8, 2 * 2 * 10 * 8 * sizeof(float) * 3);  // three sequences of 10
  EXPECT_EQ(pool.bytes_for(10), 2u * 2 * 10 * 8 * sizeof(float));
  auto a = pool.try_allocate(10), b = pool.try_allocate(10), c = pool.try_allocate(10);
  ASSERT_TRUE(a && b && c);
  EXPECT_EQ(pool.in_use(), pool.limit());
  EXPECT_FALSE(pool.try_allocate(1));
  EXPECT_FALSE(pool.try_allocate(0));
  b.reset();
  EXPECT_EQ(pool.in_use(), 2 * pool.bytes_for(10));
  auto d = pool.try_allocate(10);
  ASSERT_TRUE(d);
  EXPECT_FALSE(pool.try_allocate(11));
  // Layers and keys/values do not overlap.
  EXPECT_EQ(d->values(0), d->keys(0) + 10 * 8);
  EXPECT_EQ(d->keys(1), d->values(0) + 10 * 8);
  d->keys(1)[10 * 8 - 1] = 1.f;
  d->values(1)[10 * 8 - 1] = 2.f;
  EXPECT_EQ(d->keys(1)[10 * 8 - 1], 1.f);
  EXPECT_FALSE(pool.try_allocate(int64_t(1) << 40));  // huge: refused, not an exception
}
