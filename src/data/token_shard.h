// Token shards: a flat array of token ids on disk with a checked header, read
// through mmap. One shard per split (train.bin, val.bin).
//
// Layout (all integers little-endian), header = 64 bytes:
//   offset  size  field
//        0     8  magic          "KEELTOK\0"
//        8     4  version        1
//       12     4  element width  2 (u16, vocab_size <= 65536) or 4 (u32)
//       16     8  vocab_size     every id is < vocab_size
//       24     8  token_count    number of ids in the payload
//       32     8  checksum       xxh3-64 of the payload bytes (seed 0)
//       40     8  tokenizer      Tokenizer::hash() of the tokenizer used (0 = unknown)
//       48    16  reserved       zero
//       64     -  payload        token_count ids of `element width` bytes
// The file size must be exactly 64 + token_count * width. Writers write a
// temporary file, fsync it, and rename it over the final name.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>

namespace keel::data {

inline constexpr uint32_t kTokenShardVersion = 1;
inline constexpr size_t kTokenShardHeaderBytes = 64;

// Writes `tokens` (each in [0, vocab_size)) as a shard at `path` atomically.
// Throws keel::IoError naming the file on failure, keel::Error on a bad id.
void write_token_shard(const std::string& path, std::span<const int32_t> tokens,
                       uint64_t vocab_size, uint64_t tokenizer_hash = 0);

// A read-only, memory-mapped shard. Copies share the mapping.
class TokenShard {
 public:
  TokenShard() = default;
  // Maps and validates the file: a bad magic, version, element width, size or
  // (when verify_checksum) checksum is a keel::IoError naming the file, the
  // field and its byte offset.
  static TokenShard open(const std::string& path, bool verify_checksum = true);

  int64_t size() const { return count_; }
  uint64_t vocab_size() const { return vocab_size_; }
  uint64_t tokenizer_hash() const { return tokenizer_hash_; }
  uint64_t checksum() const { return checksum_; }
  int width() const { return width_; }
  const std::string& path() const { return path_; }

  // Token i (0 <= i < size(); unchecked).
  int32_t operator[](int64_t i) const {
    return width_ == 2 ? int32_t(reinterpret_cast<const uint16_t*>(payload_)[i])
                       : int32_t(reinterpret_cast<const uint32_t*>(payload_)[i]);
  }
  // Copies tokens [start, start + n) to out; throws keel::Error if out of range.
  void read(int64_t start, int64_t n, int32_t* out) const;

 private:
  struct Mapping;
  std::shared_ptr<Mapping> map_;
  const unsigned char* payload_ = nullptr;
  int64_t count_ = 0;
  uint64_t vocab_size_ = 0, tokenizer_hash_ = 0, checksum_ = 0;
  int width_ = 2;
  std::string path_;
};

}  // namespace keel::data
