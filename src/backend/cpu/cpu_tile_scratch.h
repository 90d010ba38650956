// Per-thread scratch for the tiled kernels (attention, the bf16 GEMM block):
// one 64-byte aligned buffer that outlives a call and grows when a call needs
// more, carved into the pieces the call uses.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>

namespace keel::backend::cpu::KEEL_CPU_ISA {

// Freshly allocated large buffers cost a page fault per 4 KiB on every call
// (measured: in a VM, more time than the arithmetic of a T=256 backward).
struct TileScratch {
  float* p = nullptr;
  int64_t n = 0;
  TileScratch() = default;
  TileScratch(const TileScratch&) = delete;
  TileScratch& operator=(const TileScratch&) = delete;
  ~TileScratch() { std::free(p); }
  // Consecutive pieces of the given sizes (in floats), each 64-byte aligned.
  template <size_t N>
  void carve(const int64_t (&sizes)[N], float* (&out)[N]) {
    int64_t total = 0;
    for (int64_t s : sizes) total += (s + 15) / 16 * 16;
    if (total > n) {
      std::free(p);
      p = static_cast<float*>(std::aligned_alloc(64, size_t(total) * sizeof(float)));
      n = p ? total : 0;
      if (!p) throw std::bad_alloc();
    }
    int64_t off = 0;
    for (size_t i = 0; i < N; ++i) out[i] = p + off, off += (sizes[i] + 15) / 16 * 16;
  }
};

}  // namespace keel::backend::cpu::KEEL_CPU_ISA
