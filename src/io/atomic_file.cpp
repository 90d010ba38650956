#include "io/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace keel::io {

namespace {

// fsync of the directory makes the rename itself durable.
void sync_parent_dir(const std::string& path) {
  std::filesystem::path dir = std::filesystem::path(path).parent_path();
  if (dir.empty()) dir = ".";
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return;  // some filesystems refuse; the file itself is already synced
  ::fsync(fd);
  ::close(fd);
}

}  // namespace

void write_all(int fd, const void* buf, size_t n, const std::string& path) {
  const char* p = static_cast<const char*>(buf);
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      fail<IoError>("{}: write failed: {}", path, std::strerror(errno));
    }
    p += w;
    n -= size_t(w);
  }
}

void write_file_atomic_with(const std::string& path, const std::function<void(int fd)>& emit) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail<IoError>("{}: cannot create: {}", tmp, std::strerror(errno));
  try {
    emit(fd);
    if (::fsync(fd) != 0) fail<IoError>("{}: fsync failed: {}", tmp, std::strerror(errno));
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (::close(fd) != 0) {
    ::unlink(tmp.c_str());
    fail<IoError>("{}: close failed: {}", tmp, std::strerror(errno));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    fail<IoError>("{}: rename from {} failed: {}", path, tmp, std::strerror(e));
  }
  sync_parent_dir(path);
}

void write_file_atomic(const std::string& path, std::string_view bytes) {
  write_file_atomic_with(path, [&](int fd) { write_all(fd, bytes.data(), bytes.size(), path); });
}

std::string read_file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail<IoError>("{}: cannot open: {}", path, std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) fail<IoError>("{}: read failed", path);
  return ss.str();
}

void make_dirs(const std::string& path) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec) fail<IoError>("{}: cannot create directory: {}", path, ec.message());
}

}  // namespace keel::io
