#include "resilience/piece_digest.h"

#include <algorithm>
#include <cstring>

// XXH3 dispatched at run time to the widest vectors the CPU has: the inlined
// build is SSE2 only.
#include <xxh_x86dispatch.h>

#include "core/error.h"

namespace keel::resilience {

namespace {

size_t piece_count(size_t n) {
  return (n + kDigestPiece - 1) / kDigestPiece;
}

uint64_t combine(const std::vector<uint64_t>& digests) {
  return combine_piece_digests(digests.data(), digests.size());
}

}  // namespace

uint64_t piece_digest(const std::byte* data, size_t n, int threads) {
  const int64_t pieces = int64_t(piece_count(n));
  std::vector<uint64_t> d(static_cast<size_t>(pieces));
#pragma omp parallel for schedule(static) num_threads(std::max(threads, 1))
  for (int64_t i = 0; i < pieces; ++i) {
    const size_t lo = size_t(i) * kDigestPiece, len = std::min(kDigestPiece, n - lo);
    d[size_t(i)] = XXH3_64bits(data + lo, len);
  }
  return combine(d);
}

void PieceDigester::through(size_t n) {
  n = std::min(n, n_);
  while (done_ + kDigestPiece <= n) {
    digests_.push_back(XXH3_64bits(data_ + done_, kDigestPiece));
    done_ += kDigestPiece;
  }
}

uint64_t PieceDigester::finish() {
  through(n_);
  if (done_ < n_) digests_.push_back(XXH3_64bits(data_ + done_, n_ - done_));
  done_ = n_;
  return combine(digests_);
}

uint64_t copy_and_digest(std::span<std::byte> out, std::span<const CopySegment> segments,
                         int threads, const std::function<void()>& halfway) {
  for (size_t s = 0; s < segments.size(); ++s) {
    KEEL_ASSERT(segments[s].at + segments[s].src.size() <= out.size());
    KEEL_ASSERT(s == 0 || segments[s - 1].at + segments[s - 1].src.size() <= segments[s].at);
  }
  const size_t n = out.size();
  const int64_t pieces = int64_t(piece_count(n));
  std::vector<uint64_t> d(static_cast<size_t>(pieces));
  const auto run = [&](int64_t first, int64_t last) {
#pragma omp parallel for schedule(static) num_threads(std::max(threads, 1))
    for (int64_t i = first; i < last; ++i) {
      const size_t lo = size_t(i) * kDigestPiece, hi = std::min(n, lo + kDigestPiece);
      // The first segment that ends past lo.
      auto it =
          std::upper_bound(segments.begin(), segments.end(), lo,
                           [](size_t x, const CopySegment& s) { return x < s.at + s.src.size(); });
      for (; it != segments.end() && it->at < hi; ++it) {
        const size_t a = std::max(lo, it->at), b = std::min(hi, it->at + it->src.size());
        if (a < b) std::memcpy(out.data() + a, it->src.data() + (a - it->at), b - a);
      }
      d[size_t(i)] = XXH3_64bits(out.data() + lo, hi - lo);
    }
  };
  run(0, pieces / 2);
  if (halfway) halfway();
  run(pieces / 2, pieces);
  return combine(d);
}

}  // namespace keel::resilience
