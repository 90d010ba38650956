// team_for: one job at a time. Each participant (the caller and the helpers)
// owns a contiguous range of the items, published as a 64-bit word (job id,
// end, next) that it claims from the front with a compare-and-swap; one that
// runs out takes items from the back of the fullest other range. A claim
// can never land in a job other than the one whose body it reads: the job id
// is in the word it swaps. Contiguous ranges keep each thread on one run of
// the weights' memory: items claimed alternately from one list ended every
// item's stream (and the prefetches running ahead of it) at memory another
// thread was reading. Helpers spin briefly after a job (decode issues one
// every few tens of microseconds), then sleep on a futex.
#include "backend/cpu/gemv_team.h"

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>
#include <vector>

namespace keel::backend::cpu {

namespace {

using Body = void (*)(const void*, int64_t);

// A range word: job id (16 bits) | end (24 bits) | next unclaimed item (24 bits).
constexpr int kItemBits = 24;
constexpr uint64_t kItemMask = (uint64_t(1) << kItemBits) - 1;
constexpr int64_t kMaxItems = int64_t(kItemMask);
constexpr int kMaxThreads = 256;

uint64_t pack(uint64_t job, int64_t begin, int64_t end) {
  return (job << (2 * kItemBits)) | (uint64_t(end) << kItemBits) | uint64_t(begin);
}
int64_t range_end(uint64_t w) {
  return int64_t((w >> kItemBits) & kItemMask);
}
int64_t range_next(uint64_t w) {
  return int64_t(w & kItemMask);
}

// How long a helper polls for the next job before it sleeps.
constexpr auto kSpin = std::chrono::microseconds(200);

class Team {
 public:
  void run(int threads, int64_t n, Body body, const void* ctx) {
    std::unique_lock lock(mu_, std::try_to_lock);
    threads = int(std::min<int64_t>({threads, n, kMaxThreads}));
    if (!lock.owns_lock() || threads <= 1 || n > kMaxItems) {
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
    // Ranges past `threads` were emptied by their last job (every item of a
    // job is claimed before it returns), so there is nothing to take there.
    for (int p = 0; p < threads; ++p)
      range_[p].w.store(pack(job_, n * p / threads, n * (p + 1) / threads),
                        std::memory_order_release);
    parts_.store(threads, std::memory_order_release);
    epoch_.fetch_add(1);
    if (sleepers_.load() > 0) epoch_.notify_all();
    work(0);
    while (done_.load(std::memory_order_acquire) < n) _mm_pause();
  }

 private:
  // Claims one item of range r, from its front or its back; -1 when it is empty.
  int64_t claim(int r, bool from_back) {
    for (;;) {
      uint64_t cur = range_[r].w.load(std::memory_order_acquire);
      const int64_t end = range_end(cur), next = range_next(cur);
      if (next >= end) return -1;
      // Success means the job read here is still live (its item is not
      // done), so body and ctx, written before it was published, are its own.
      const uint64_t to = from_back ? cur - (uint64_t(1) << kItemBits) : cur + 1;
      if (range_[r].w.compare_exchange_weak(cur, to, std::memory_order_acq_rel))
        return from_back ? end - 1 : next;
    }
  }

  void run_item(int64_t i) {
    body_.load(std::memory_order_relaxed)(ctx_.load(std::memory_order_relaxed), i);
  }

  // Participant p's range from its front, then the others' from their backs,
  // the fullest first, until nothing is left; then adds the items it ran to
  // done_ at once. Every item it claimed is done by then, and the job cannot
  // end (nor the next start) before that add, so the count is the job's.
  void work(int p) {
    int64_t ran = 0;
    for (int64_t i; (i = claim(p, false)) >= 0; ++ran) run_item(i);
    const int parts = parts_.load(std::memory_order_acquire);
    for (;;) {
      int victim = -1;
      int64_t most = 0;
      for (int q = 0; q < parts; ++q) {
        const uint64_t w = range_[q].w.load(std::memory_order_relaxed);
        if (q != p && range_end(w) - range_next(w) > most) {
          most = range_end(w) - range_next(w);
          victim = q;
        }
      }
      if (victim < 0) break;
      if (const int64_t i = claim(victim, true); i >= 0) {
        run_item(i);
        ++ran;
      }
    }
    if (ran > 0) done_.fetch_add(ran, std::memory_order_release);
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
      if (id < want_.load(std::memory_order_relaxed)) work(id + 1);
    }
  }

  std::mutex mu_;  // one job at a time
  std::vector<std::thread> helpers_;
  uint64_t job_ = 0;
  // Each range word on a cache line of its own: every claim writes one, and
  // words sharing a line made the threads' claims take that line from each
  // other (smaller items measured slower for it: one 16-row packed group per
  // item instead of four took 20% longer per q8_0 token).
  struct alignas(64) Range {
    std::atomic<uint64_t> w{0};
  };
  Range range_[kMaxThreads];
  std::atomic<int> parts_{0};
  std::atomic<Body> body_{nullptr};
  std::atomic<const void*> ctx_{nullptr};
  alignas(64) std::atomic<int64_t> done_{0};
  alignas(64) std::atomic<uint32_t> epoch_{0};
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
