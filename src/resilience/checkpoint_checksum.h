// File checksums for checkpoints: XXH3-64 over a file's bytes, read in
// chunks so multi-gigabyte files never sit in memory twice. The manifest
// stores each file's size and checksum; loading recomputes and compares them.
#pragma once
#include <cstdint>
#include <string>

namespace keel::resilience {

struct FileChecksum {
  uint64_t bytes = 0;
  std::string xxh3;  // 16 lowercase hex digits
};

// Size and XXH3-64 of the file at path (IoError naming it if unreadable).
FileChecksum checksum_file(const std::string& path);

// XXH3-64 of a byte range as 16 lowercase hex digits.
std::string xxh3_hex(const void* data, size_t n);

}  // namespace keel::resilience
