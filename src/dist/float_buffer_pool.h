// Recycled float vectors for the sums of a communicator. A data-parallel step
// starts the same gradient sums every step; fresh vectors of megabytes each
// were zero-filled and page-faulted in again every step (a fifth of a small
// model's step time on two ranks). Buffers of finished sums come back here.
#pragma once
#include <cstddef>
#include <memory>
#include <mutex>
#include <vector>

namespace keel::dist {

class FloatBufferPool {
 public:
  // A vector of n floats; its contents are unspecified (a recycled buffer
  // keeps what it held), so the caller overwrites every element it reads.
  std::vector<float> take(size_t n) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      // The smallest buffer that holds n, so big buffers stay for big sums.
      size_t best = free_.size();
      for (size_t i = 0; i < free_.size(); ++i)
        if (free_[i].capacity() >= n &&
            (best == free_.size() || free_[i].capacity() < free_[best].capacity()))
          best = i;
      if (best != free_.size()) {
        std::vector<float> v = std::move(free_[best]);
        free_.erase(free_.begin() + std::ptrdiff_t(best));
        v.resize(n);
        return v;
      }
    }
    return std::vector<float>(n);
  }
  // Keeps v for a later take (up to a bound; beyond it v is freed).
  void give(std::vector<float>&& v) {
    if (v.capacity() == 0) return;
    std::lock_guard<std::mutex> lock(mu_);
    if (free_.size() < kMaxBuffers) free_.push_back(std::move(v));
  }

 private:
  static constexpr size_t kMaxBuffers = 64;
  std::mutex mu_;
  std::vector<std::vector<float>> free_;
};

}  // namespace keel::dist
