// The KV cache pool: its byte limit refuses instead of failing, and memory
// comes back when a sequence goes away.
#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "core/error.h"

#include "serve/kv_cache.h"

using namespace keel::serve;

namespace {
float* f32(void* p) {
  return static_cast<float*>(p);
}
}  // namespace

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
  EXPECT_EQ(f32(d->values(0)), f32(d->keys(0)) + 10 * 8);
  EXPECT_EQ(f32(d->keys(1)), f32(d->values(0)) + 10 * 8);
  f32(d->keys(1))[10 * 8 - 1] = 1.f;
  f32(d->values(1))[10 * 8 - 1] = 2.f;
  EXPECT_EQ(f32(d->keys(1))[10 * 8 - 1], 1.f);
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
  const float* first = f32(a->keys(0));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(first) % 4096, 0u);
  f32(a->values(11))[cap * 768 - 1] = 3.f;  // the last value is writable
  a.reset();
  auto b = pool.try_allocate(cap - 4);  // within a quarter of the kept size
  ASSERT_TRUE(b);
  EXPECT_EQ(f32(b->keys(0)), first);
  EXPECT_EQ(pool.in_use(), pool.bytes_for(cap - 4));
}

// A bf16 pool holds twice the sequences of an f32 pool in the same bytes:
// its rows are 2 bytes an element, laid out as the f32 ones.
TEST(KvCache, Bf16PoolHalvesTheBytes) {
  const size_t f32_seq = 2u * 2 * 10 * 8 * sizeof(float);
  KvCachePool pool(2, 8, 3 * f32_seq, nullptr, keel::DType::BF16);
  EXPECT_EQ(pool.dtype(), keel::DType::BF16);
  EXPECT_EQ(pool.bytes_for(10), f32_seq / 2);
  std::vector<std::unique_ptr<KvSequence>> held;
  while (auto s = pool.try_allocate(10)) held.push_back(std::move(s));
  EXPECT_EQ(held.size(), 6u);
  KvSequence& d = *held.back();
  EXPECT_EQ(d.dtype(), keel::DType::BF16);
  auto* k0 = static_cast<char*>(d.keys(0));
  EXPECT_EQ(static_cast<char*>(d.values(0)), k0 + 10 * 8 * 2);
  EXPECT_EQ(static_cast<char*>(d.keys(1)), k0 + 2 * 10 * 8 * 2);
  EXPECT_THROW(KvCachePool(2, 8, 1 << 20, nullptr, keel::DType::F16), keel::ConfigError);
}
