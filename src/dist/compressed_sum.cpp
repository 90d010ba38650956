#include "dist/compressed_sum.h"

#include <zstd.h>

#include <algorithm>
#include <cstring>

#include "core/error.h"

namespace keel::dist {

namespace {
// Fast level: the payload is mostly small integers or index gaps, where level
// 1 already removes nearly all the redundancy, at several hundred MB/s.
constexpr int kZstdLevel = 1;
}  // namespace

CompressedSum::CompressedSum(Communicator& comm, GradCodecConfig cfg, int64_t n)
    : comm_(comm), cfg_(cfg), n_(n), residual_(size_t(n), 0.f) {
  if (cfg_.kind == GradCodecKind::None)
    fail<DistError>("CompressedSum: codec 'none' is the plain allreduce_sum");
  payload_.resize(encoded_bytes(cfg_, n_));
  packed_.resize(ZSTD_compressBound(payload_.size()));
  unpacked_.resize(payload_.size());
}

uint64_t CompressedSum::sum(std::span<const float> x, std::span<float> out, const char* what,
                            double topk_fraction) {
  KEEL_ASSERT(int64_t(x.size()) == n_ && int64_t(out.size()) == n_);
  GradCodecConfig cfg = cfg_;
  if (topk_fraction > 0) cfg.topk_fraction = topk_fraction;
  if (const size_t bytes = encoded_bytes(cfg, n_); bytes != payload_.size()) {
    payload_.resize(bytes);
    packed_.resize(ZSTD_compressBound(bytes));
    unpacked_.resize(bytes);
  }
  encode_with_feedback(cfg, x, residual_, payload_);
  const size_t packed =
      ZSTD_compress(packed_.data(), packed_.size(), payload_.data(), payload_.size(), kZstdLevel);
  if (ZSTD_isError(packed))
    fail<DistError>("rank {}: compressing the {} payload ({} bytes) failed: {}", comm_.rank(), what,
                    payload_.size(), ZSTD_getErrorName(packed));
  const std::vector<uint64_t> sizes = allgather_value(comm_, uint64_t(packed));
  std::vector<size_t> counts(sizes.begin(), sizes.end());
  size_t total = 0;
  for (size_t c : counts) total += c;
  std::vector<std::byte> all(total);
  comm_.allgatherv(std::as_bytes(std::span<const uint8_t>(packed_.data(), packed)), all, counts);

  std::fill(out.begin(), out.end(), 0.f);
  size_t off = 0;
  for (int r = 0; r < comm_.size(); ++r) {
    const size_t got =
        ZSTD_decompress(unpacked_.data(), unpacked_.size(), all.data() + off, counts[size_t(r)]);
    if (ZSTD_isError(got) || got != unpacked_.size())
      fail<DistError>(
          "rank {}: the {} payload from rank {} ({} bytes at offset {}) does not decode to {} "
          "bytes: {}",
          comm_.rank(), what, r, counts[size_t(r)], off, unpacked_.size(),
          ZSTD_isError(got) ? ZSTD_getErrorName(got) : "wrong size");
    decode_accumulate(cfg, unpacked_, out);
    off += counts[size_t(r)];
  }
  const uint64_t peers = uint64_t(comm_.size() - 1);
  return peers * (uint64_t(packed) + sizeof(uint64_t));
}

}  // namespace keel::dist
