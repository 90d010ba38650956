// Arena: 64-byte alignment, memory reused after reset, high-water mark, and
// chunks added when a step outgrows the first; host_alloc beneath both.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <set>
#include <vector>

#include "core/arena.h"
#include "core/host_memory.h"
#include "core/tensor.h"

namespace keel {
namespace {

bool aligned64(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % 64 == 0;
}

TEST(Arena, AllocationsAreAlignedAndDisjoint) {
  Arena a(4096);
  char* prev = nullptr;
  size_t prev_size = 0;
  for (size_t bytes : {1u, 3u, 64u, 65u, 100u, 0u, 4000u, 7u}) {
    char* p = static_cast<char*>(a.alloc(bytes));
    ASSERT_TRUE(aligned64(p)) << bytes;
    std::memset(p, 0xab, bytes);  // writable (ASan/valgrind would flag overruns)
    if (prev && p > prev) {
      EXPECT_GE(size_t(p - prev), prev_size);
    }
    prev = p;
    prev_size = bytes;
  }
}

TEST(Arena, UsedAndHighWater) {
  Arena a(1 << 20);
  EXPECT_EQ(a.used(), 0u);
  a.alloc(100);  // rounds to 128
  a.alloc(1);    // 64
  EXPECT_EQ(a.used(), 192u);
  EXPECT_EQ(a.high_water(), 192u);
  a.reset();
  EXPECT_EQ(a.used(), 0u);
  EXPECT_EQ(a.high_water(), 192u);  // survives reset
  a.alloc(64);
  EXPECT_EQ(a.high_water(), 192u);
  a.alloc(1000);
  EXPECT_EQ(a.used(), 64u + 1024u);
  EXPECT_EQ(a.high_water(), 1088u);
}

TEST(Arena, ResetReusesTheSameMemory) {
  Arena a(1 << 16);
  std::vector<void*> first;
  for (int i = 0; i < 10; ++i) first.push_back(a.alloc(1000));
  size_t cap = a.capacity();
  a.reset();
  for (int i = 0; i < 10; ++i) EXPECT_EQ(a.alloc(1000), first[i]) << i;
  EXPECT_EQ(a.capacity(), cap);  // no new chunk for the same step
}

TEST(Arena, GrowsBeyondOneChunkAndKeepsItAfterReset) {
  Arena a(1024);
  std::set<void*> ptrs;
  for (int i = 0; i < 20; ++i) {
    void* p = a.alloc(500);
    ASSERT_TRUE(aligned64(p));
    ptrs.insert(p);
  }
  EXPECT_EQ(ptrs.size(), 20u);
  EXPECT_GE(a.capacity(), 20u * 512u);
  void* big = a.alloc(10000);  // larger than a chunk: a chunk of its own
  ASSERT_TRUE(aligned64(big));
  std::memset(big, 1, 10000);
  size_t cap = a.capacity();
  a.reset();
  for (int i = 0; i < 20; ++i) a.alloc(500);
  a.alloc(10000);
  EXPECT_EQ(a.capacity(), cap) << "the same step after reset must not allocate";
}

// host_alloc takes two roads (heap below 8 MiB, a huge-page mapping from
// there): both must give 64-byte aligned memory that holds every byte asked
// for, and Tensor::zeros over the mapped road must still be zeroed.
TEST(HostMemory, BothRoadsAreAlignedAndWritable) {
  for (size_t n :
       {size_t(1), size_t(4096), (size_t(8) << 20) - 1, size_t(8) << 20, (size_t(9) << 20) + 3}) {
    void* p = host_alloc(n);
    ASSERT_TRUE(aligned64(p)) << n;
    std::memset(p, 0xab, n);
    EXPECT_EQ(static_cast<unsigned char*>(p)[n - 1], 0xab) << n;
    host_free(p, n);
  }
  host_free(nullptr, size_t(16) << 20);
  const Tensor t = Tensor::zeros({int64_t(3) << 20}, DType::F32);  // 12 MiB
  const float* d = t.data<float>();
  EXPECT_TRUE(std::all_of(d, d + t.numel(), [](float v) { return v == 0.f; }));
}

}  // namespace
}  // namespace keel
