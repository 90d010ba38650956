// A whole file read into one host buffer (io layer). Large files land in
// memory from host_alloc (2 MiB pages): on a virtual machine each fresh 4 KiB
// page costs ~25 us to fault in, which dominated loading a checkpoint.
#pragma once
#include <cstddef>
#include <span>
#include <string>

namespace keel::io {

class FileBytes {
 public:
  FileBytes() = default;
  // The whole file (one allocation of its size, read with pread); IoError
  // naming the path and the offset when it cannot be opened or read, or
  // when it changes size while being read.
  static FileBytes read(const std::string& path);

  FileBytes(FileBytes&& o) noexcept;
  FileBytes& operator=(FileBytes&& o) noexcept;
  FileBytes(const FileBytes&) = delete;
  FileBytes& operator=(const FileBytes&) = delete;
  ~FileBytes();

  const std::byte* data() const { return data_; }
  size_t size() const { return size_; }
  std::span<const std::byte> bytes() const { return {data_, size_}; }

 private:
  std::byte* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace keel::io
