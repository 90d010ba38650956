// team_for: one job at a time, published as a single 64-bit word (job id,
// the unclaimed items' end and start) that every participant claims items
// from with a compare-and-swap, so a claim can never land in a job other
// than the one whose body it reads. The caller claims from the front and
// the helpers from the back: with two threads each reads one contiguous run
// of the items' memory, where alternate items would end every item's stream
// (and the prefetches run ahead of it) at memory the other thread reads.
// Helpers spin briefly after a job (decode issues one every few tens of
// microseconds), then sleep on a futex.
#include "backend/cpu/gemv_team.h"

#include <immintrin.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>
#include <vector>

namespace keel::backend::cpu {

namespace {

using Body = void (*)(const void*, int64_t);

// ctr_ layout: job id (16 bits) | end of the unclaimed items (24 bits) |
// their start (24 bits).
constexpr int kItemBits = 24;
constexpr uint64_t kItemMask = (uint64_t(1) << kItemBits) - 1;
constexpr int64_t kMaxItems = int64_t(kItemMask);

uint64_t pack(uint64_t job, int64_t n) {
  return (job << (2 * kItemBits)) | (uint64_t(n) << kItemBits);
}

// How long a helper polls for the next job before it sleeps.
constexpr auto kSpin = std::chrono::microseconds(200);

class Team {
 public:
  void run(int threads, int64_t n, Body body, const void* ctx) {
    std::unique_lock lock(mu_, std::try_to_lock);
    if (!lock.owns_lock() || threads <= 1 || n <= 1 || n > kMaxItems) {
      for (int64_t i = 0; i < n; ++i) body(ctx, i);
      return;
    }
    while (int(helpers_.size()) < threads - 1) {
      const int id = int(helpers_.size());
      helpers_.emplace_back([this, id] { helper(id); });
    }
    want_.store(threads - 1, std::memory_order_relaxed);
    body_.store(body, std::memory_order_relaxed);
    ctx_.store(ctx, std::memory_order_relaxed);
    done_.store(0, std::memory_order_relaxed);
    job_ = (job_ + 1) & 0xffff;
    ctr_.store(pack(job_, n), std::memory_order_release);
    epoch_.fetch_add(1);
    if (sleepers_.load() > 0) epoch_.notify_all();
    work(false);
    while (done_.load(std::memory_order_acquire) < n) _mm_pause();
  }

 private:
  // Claims and runs items of the published job, from the back or the front,
  // until none is left.
  void work(bool from_back) {
    for (;;) {
      uint64_t cur = ctr_.load(std::memory_order_acquire);
      const Body body = body_.load(std::memory_order_relaxed);
      const void* ctx = ctx_.load(std::memory_order_relaxed);
      const int64_t end = int64_t((cur >> kItemBits) & kItemMask), start = int64_t(cur & kItemMask);
      if (start >= end) return;
      // Success means the job read above is still live (its item is not
      // done), so body and ctx, written before it was published, are its own.
      const uint64_t next = from_back ? cur - (uint64_t(1) << kItemBits) : cur + 1;
      if (!ctr_.compare_exchange_weak(cur, next, std::memory_order_acq_rel)) continue;
      body(ctx, from_back ? end - 1 : start);
      done_.fetch_add(1, std::memory_order_release);
    }
  }

  void helper(int id) {
    uint32_t seen = epoch_.load();
    for (;;) {
      const auto t0 = std::chrono::steady_clock::now();
      int polls = 0;
      while (epoch_.load(std::memory_order_acquire) == seen) {
        _mm_pause();
        if (++polls % 64 == 0 && std::chrono::steady_clock::now() - t0 > kSpin) {
          sleepers_.fetch_add(1);
          epoch_.wait(seen);
          sleepers_.fetch_sub(1);
        }
      }
      seen = epoch_.load(std::memory_order_acquire);
      if (id < want_.load(std::memory_order_relaxed)) work(true);
    }
  }

  std::mutex mu_;  // one job at a time
  std::vector<std::thread> helpers_;
  uint64_t job_ = 0;
  std::atomic<uint64_t> ctr_{0};
  std::atomic<Body> body_{nullptr};
  std::atomic<const void*> ctx_{nullptr};
  std::atomic<int64_t> done_{0};
  std::atomic<uint32_t> epoch_{0};
  std::atomic<int> sleepers_{0}, want_{0};
};

}  // namespace

void team_for(int threads, int64_t n, Body body, const void* ctx) {
  // Never destroyed: the helpers sleep until the process ends, and no static
  // destructor can race with a kernel still running on another thread.
  static Team* const team = new Team;
  team->run(threads, n, body, ctx);
}

}  // namespace keel::backend::cpu
