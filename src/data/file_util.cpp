// POSIX implementation of the data layer's file helpers.
#include "data/file_util.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/error.h"
#include "io/atomic_file.h"

namespace keel::data {

std::string read_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail<IoError>("cannot open '{}': {}", path, std::strerror(errno));
  std::string out;
  char buf[1 << 16];
  for (;;) {
    const ssize_t r = ::read(fd, buf, sizeof(buf));
    if (r < 0) {
      if (errno == EINTR) continue;
      const int e = errno;
      ::close(fd);
      fail<IoError>("cannot read '{}' at offset {}: {}", path, out.size(), std::strerror(e));
    }
    if (r == 0) break;
    out.append(buf, size_t(r));
  }
  ::close(fd);
  return out;
}

// One implementation of the temp-file dance (exclusive, no-follow, random
// name, directory fsync checked) for the whole project.
void write_file_atomic(const std::string& path, std::string_view bytes) {
  io::write_file_atomic(path, bytes);
}

}  // namespace keel::data
