#include "core/host_memory.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <new>

namespace keel {

namespace {

constexpr size_t kHugePage = size_t(2) << 20;

size_t mapped_length(size_t bytes) {
  return (bytes + kHugePage - 1) / kHugePage * kHugePage;
}

}  // namespace

void* host_alloc(size_t bytes, size_t mapped_min) {
  if (bytes < std::max(mapped_min, kHugePage)) {
    void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64 + (bytes == 0 ? 64 : 0));
    if (!p) throw std::bad_alloc();
    return p;
  }
  const size_t len = mapped_length(bytes);
  void* p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  (void)::madvise(p, len, MADV_HUGEPAGE);  // advice only: without it, 4 KiB pages
  return p;
}

void host_free(void* p, size_t bytes, size_t mapped_min) {
  if (!p) return;
  if (bytes < std::max(mapped_min, kHugePage)) {
    std::free(p);
    return;
  }
  ::munmap(p, mapped_length(bytes));
}

}  // namespace keel
