// The KV cache pool: its byte limit refuses instead of failing, and memory
// comes back when a sequence goes away.
#include <gtest/gtest.h>

#include <cstdint>

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

// A sequence's rows are first touched a position at a time while it decodes,
// so buffers from 2 MiB on are mapped (page aligned, where a heap block sits
// just past a header; in 2 MiB pages where the kernel gives them) and a
// finished one is handed to the next sequence of about its size instead of
// being faulted in again.
TEST(KvCache, MidSizedBuffersAreMappedAndKept) {
  KvCachePool pool(12, 768, size_t(1) << 30);
  const int64_t cap = 48;  // 3.4 MiB: below the 8 MiB of host_alloc's default
  ASSERT_GT(pool.bytes_for(cap), size_t(2) << 20);
  auto a = pool.try_allocate(cap);
  ASSERT_TRUE(a);
  const float* first = a->keys(0);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(first) % 4096, 0u);
  a->values(11)[cap * 768 - 1] = 3.f;  // the last value is writable
  a.reset();
  auto b = pool.try_allocate(cap - 4);  // within a quarter of the kept size
  ASSERT_TRUE(b);
  EXPECT_EQ(b->keys(0), first);
  EXPECT_EQ(pool.in_use(), pool.bytes_for(cap - 4));
}
