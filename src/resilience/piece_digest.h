// Checksums of large buffers that several threads compute at once: XXH3 of
// each fixed 256 KiB piece, then XXH3 of those digests in order. The pieces
// are fixed by the bytes alone, so the value does not depend on the thread
// count, and a copy can checksum each piece while it is still in cache.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "core/piece_digest.h"

namespace keel::resilience {

// The piecewise digest of n bytes, on `threads` threads (<= 1: the caller's).
uint64_t piece_digest(const std::byte* data, size_t n, int threads);

// The same digest, fed in order: through(n) says bytes [0, n) will not change
// again; finish() digests the rest. For writers that fill a buffer serially.
class PieceDigester {
 public:
  explicit PieceDigester(const std::byte* data, size_t n) : data_(data), n_(n) {}
  void through(size_t n);
  uint64_t finish();

 private:
  const std::byte* data_;
  size_t n_, done_ = 0;
  std::vector<uint64_t> digests_;
};

// Bytes [at, at + src.size()) of a buffer come from src.
struct CopySegment {
  size_t at = 0;
  std::span<const std::byte> src;
};

// Copies the segments (sorted by `at`, not overlapping, inside out) into out
// piece by piece on `threads` threads and returns piece_digest of out, each
// piece read right after it is written. Bytes no segment covers keep what
// they held (and are part of the digest). halfway, when set, runs once between
// the first half of the pieces and the rest (fault injection: a crash in the
// middle of a write).
uint64_t copy_and_digest(std::span<std::byte> out, std::span<const CopySegment> segments,
                         int threads, const std::function<void()>& halfway = {});

}  // namespace keel::resilience
