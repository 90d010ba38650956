#include "io/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <random>

#include "core/error.h"

namespace keel::io {

namespace {

// fsync of the directory makes the rename itself durable; a failure means the
// new name may not survive a crash, so it is an error like the file's fsync.
void sync_parent_dir(const std::string& path) {
  std::filesystem::path dir = std::filesystem::path(path).parent_path();
  if (dir.empty()) dir = ".";
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    fail<IoError>("{}: cannot open directory {} to sync the rename: {}", path, dir.string(),
                  std::strerror(errno));
  const int rc = ::fsync(fd);
  const int e = errno;
  ::close(fd);
  // EINVAL: the filesystem cannot sync directories at all (POSIX: "does not
  // support synchronization"); there is nothing more durable to ask for.
  if (rc != 0 && e != EINVAL)
    fail<IoError>("{}: fsync of directory {} failed: {}", path, dir.string(), std::strerror(e));
}

// A fresh temp file next to `path`. The name carries random bits, and
// O_EXCL | O_NOFOLLOW refuse a file or symlink someone placed there in
// advance, so a planted link cannot redirect the write elsewhere.
int create_temp(const std::string& path, std::string& tmp) {
  static std::atomic<uint64_t> counter{0};
  std::random_device rd;
  for (int attempt = 0; attempt < 16; ++attempt) {
    const uint64_t r = (uint64_t(rd()) << 32) ^ rd() ^ counter.fetch_add(1);
    tmp = fmt::format("{}.tmp.{}.{:016x}", path, ::getpid(), r);
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd >= 0) return fd;
    if (errno != EEXIST) fail<IoError>("{}: cannot create: {}", tmp, std::strerror(errno));
  }
  fail<IoError>("{}: cannot create a temp file: 16 random names were all taken", path);
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
  std::string tmp;
  const int fd = create_temp(path, tmp);
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
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail<IoError>("{}: cannot open: {}", path, std::strerror(errno));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  // One buffer of the file's size: a stream grown by doubling and copied out
  // at the end touched three times the file's size in fresh pages. The size
  // is only a hint (a pipe or a /proc file says 0): read to the end.
  struct stat st {};
  std::string out;
  out.resize(::fstat(fd, &st) == 0 && st.st_size > 0 ? size_t(st.st_size) + 1 : 4096);
  size_t done = 0;
  for (;;) {
    if (done == out.size()) out.resize(out.size() * 2);
    const ssize_t n = ::read(fd, out.data() + done, out.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail<IoError>("{}: read failed at offset {}: {}", path, done, std::strerror(errno));
    }
    if (n == 0) break;
    done += size_t(n);
  }
  out.resize(done);
  return out;
}

void make_dirs(const std::string& path) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec) fail<IoError>("{}: cannot create directory: {}", path, ec.message());
}

}  // namespace keel::io
