#include "io/file_bytes.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "core/error.h"
#include "core/host_memory.h"

namespace keel::io {

namespace {

// Read once, right away: a file of a few MiB gains from huge pages already.
constexpr size_t kReadMappedMin = size_t(2) << 20;

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

FileBytes FileBytes::read(const std::string& path) {
  Fd f;
  f.fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (f.fd < 0) fail<IoError>("{}: cannot open: {}", path, std::strerror(errno));
  struct stat st {};
  if (::fstat(f.fd, &st) != 0) fail<IoError>("{}: cannot stat: {}", path, std::strerror(errno));
  if (!S_ISREG(st.st_mode)) fail<IoError>("{}: not a regular file", path);
  FileBytes out;
  out.size_ = size_t(st.st_size);
  out.data_ = static_cast<std::byte*>(host_alloc(out.size_, kReadMappedMin));
  size_t done = 0;
  while (done < out.size_) {
    const ssize_t n = ::pread(f.fd, out.data_ + done, out.size_ - done, off_t(done));
    if (n < 0) {
      if (errno == EINTR) continue;
      fail<IoError>("{}: read failed at offset {}: {}", path, done, std::strerror(errno));
    }
    if (n == 0)
      fail<IoError>("{}: ended at offset {} while being read ({} bytes when opened)", path, done,
                    out.size_);
    done += size_t(n);
  }
  return out;
}

FileBytes::FileBytes(FileBytes&& o) noexcept
    : data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)) {}

FileBytes& FileBytes::operator=(FileBytes&& o) noexcept {
  if (this != &o) {
    host_free(data_, size_, kReadMappedMin);
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
  }
  return *this;
}

FileBytes::~FileBytes() {
  host_free(data_, size_, kReadMappedMin);
}

}  // namespace keel::io
