// Token shard writing (atomic) and memory-mapped reading with header checks.
#include "data/token_shard.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

// XXH3 dispatched at run time to the widest vectors the CPU has: the inlined
// build is SSE2 only (4 GB/s here, against 60 in cache with AVX-512).
#include <xxh_x86dispatch.h>

#include "core/error.h"
#include "data/file_util.h"

namespace keel::data {

namespace {

constexpr char kMagic[8] = {'K', 'E', 'E', 'L', 'T', 'O', 'K', '\0'};

template <class T>
void put(std::string& buf, size_t off, T v) {
  std::memcpy(buf.data() + off, &v, sizeof v);  // x86-64 and aarch64 are little-endian
}
template <class T>
T get(const unsigned char* p, size_t off) {
  T v;
  std::memcpy(&v, p + off, sizeof v);
  return v;
}

}  // namespace

void write_token_shard(const std::string& path, std::span<const int32_t> tokens,
                       uint64_t vocab_size, uint64_t tokenizer_hash) {
  if (vocab_size == 0 || vocab_size > (uint64_t(1) << 31))
    fail("token shard '{}': vocab_size {} is out of range", path, vocab_size);
  const uint32_t width = vocab_size <= 65536 ? 2 : 4;
  std::string buf(kTokenShardHeaderBytes + tokens.size() * width, '\0');
  unsigned char* payload = reinterpret_cast<unsigned char*>(buf.data()) + kTokenShardHeaderBytes;
  for (size_t i = 0; i < tokens.size(); ++i) {
    const int32_t t = tokens[i];
    if (t < 0 || uint64_t(t) >= vocab_size)
      fail("token shard '{}': token {} at index {} is outside [0, {})", path, t, i, vocab_size);
    if (width == 2) {
      const auto v = uint16_t(t);
      std::memcpy(payload + i * 2, &v, 2);
    } else {
      const auto v = uint32_t(t);
      std::memcpy(payload + i * 4, &v, 4);
    }
  }
  std::memcpy(buf.data(), kMagic, 8);
  put<uint32_t>(buf, 8, kTokenShardVersion);
  put<uint32_t>(buf, 12, width);
  put<uint64_t>(buf, 16, vocab_size);
  put<uint64_t>(buf, 24, uint64_t(tokens.size()));
  put<uint64_t>(buf, 32, XXH3_64bits(payload, tokens.size() * width));
  put<uint64_t>(buf, 40, tokenizer_hash);
  write_file_atomic(path, buf);
}

struct TokenShard::Mapping {
  void* addr = nullptr;
  size_t bytes = 0;
  ~Mapping() {
    if (addr) ::munmap(addr, bytes);
  }
};

TokenShard TokenShard::open(const std::string& path, bool verify_checksum) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail<IoError>("token shard '{}': cannot open: {}", path, std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int e = errno;
    ::close(fd);
    fail<IoError>("token shard '{}': cannot stat: {}", path, std::strerror(e));
  }
  const auto file_bytes = size_t(st.st_size);
  if (file_bytes < kTokenShardHeaderBytes) {
    ::close(fd);
    fail<IoError>(
        "token shard '{}': field 'header' at offset 0: file has {} bytes, the header needs {}",
        path, file_bytes, kTokenShardHeaderBytes);
  }
  auto map = std::make_shared<Mapping>();
  map->addr = ::mmap(nullptr, file_bytes, PROT_READ, MAP_PRIVATE, fd, 0);
  const int e = errno;
  ::close(fd);
  if (map->addr == MAP_FAILED) {
    map->addr = nullptr;
    fail<IoError>("token shard '{}': mmap failed: {}", path, std::strerror(e));
  }
  map->bytes = file_bytes;
  const auto* p = static_cast<const unsigned char*>(map->addr);
  if (std::memcmp(p, kMagic, 8) != 0)
    fail<IoError>("token shard '{}': field 'magic' at offset 0: not a keel token shard", path);
  const auto version = get<uint32_t>(p, 8);
  if (version != kTokenShardVersion)
    fail<IoError>("token shard '{}': field 'version' at offset 8: {} (this build reads {})", path,
                  version, kTokenShardVersion);
  const auto width = get<uint32_t>(p, 12);
  const auto vocab = get<uint64_t>(p, 16);
  if (width != 2 && width != 4)
    fail<IoError>("token shard '{}': field 'element_width' at offset 12: {} (must be 2 or 4)", path,
                  width);
  if (vocab == 0 || (width == 2) != (vocab <= 65536))
    fail<IoError>(
        "token shard '{}': field 'vocab_size' at offset 16: {} does not fit element width {}", path,
        vocab, width);
  const auto count = get<uint64_t>(p, 24);
  const unsigned __int128 want = (unsigned __int128)count * width + kTokenShardHeaderBytes;
  if (want != file_bytes)
    fail<IoError>(
        "token shard '{}': field 'token_count' at offset 24: {} tokens need {} bytes but the file "
        "has {} "
        "(truncated or corrupt)",
        path, count, uint64_t(want), file_bytes);
  TokenShard s;
  s.payload_ = p + kTokenShardHeaderBytes;
  s.count_ = int64_t(count);
  s.vocab_size_ = vocab;
  s.width_ = int(width);
  s.checksum_ = get<uint64_t>(p, 32);
  s.tokenizer_hash_ = get<uint64_t>(p, 40);
  s.path_ = path;
  if (verify_checksum) {
    const uint64_t got = XXH3_64bits(s.payload_, count * width);
    if (got != s.checksum_)
      fail<IoError>(
          "token shard '{}': field 'checksum' at offset 32: header says {:016x}, payload hashes to "
          "{:016x}",
          path, s.checksum_, got);
  }
  s.map_ = std::move(map);
  return s;
}

void TokenShard::read(int64_t start, int64_t n, int32_t* out) const {
  if (start < 0 || n < 0 || start + n > count_)
    fail("token shard '{}': read [{}, {}) outside [0, {})", path_, start, start + n, count_);
  if (width_ == 2) {
    const auto* src = reinterpret_cast<const uint16_t*>(payload_) + start;
    for (int64_t i = 0; i < n; ++i) out[i] = int32_t(src[i]);
  } else {
    const auto* src = reinterpret_cast<const uint32_t*>(payload_) + start;
    for (int64_t i = 0; i < n; ++i) out[i] = int32_t(src[i]);
  }
}

}  // namespace keel::data
