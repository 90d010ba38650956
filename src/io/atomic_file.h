// Crash-safe file writes for the io layer and everything above it: the bytes
// go to a temporary name in the same directory, are fsynced, and the file is
// renamed over the final name, so a reader sees the old file or the new one.
#pragma once
#include <functional>
#include <string>
#include <string_view>

namespace keel::io {

// Writes `bytes` to `path` atomically. IoError naming the path on any failure.
void write_file_atomic(const std::string& path, std::string_view bytes);

// Streams the content through `emit(fd)` (which writes to the open descriptor
// with write_all) instead of holding it all in memory; then fsync and rename.
void write_file_atomic_with(const std::string& path, const std::function<void(int fd)>& emit);

// Writes all of buf to fd (retrying short writes); IoError naming `path` on failure.
void write_all(int fd, const void* buf, size_t n, const std::string& path);

// Whole file as bytes; IoError naming the path if it cannot be read.
std::string read_file_bytes(const std::string& path);

// Creates the directory and its parents (IoError naming it on failure).
void make_dirs(const std::string& path);

}  // namespace keel::io
