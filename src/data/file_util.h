// Small file helpers shared by the data layer: whole-file reads and atomic
// writes (temp name, fsync, rename) with errors that name the file.
#pragma once
#include <string>
#include <string_view>

namespace keel::data {

// Whole file as bytes; keel::IoError naming the path if it cannot be read.
std::string read_file(const std::string& path);
// Writes `bytes` to a fresh temp file next to `path` (io::write_file_atomic),
// fsyncs, renames over `path`, fsyncs the directory. keel::IoError naming the path on any failure.
void write_file_atomic(const std::string& path, std::string_view bytes);

}  // namespace keel::data
