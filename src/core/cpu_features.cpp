#include "core/cpu_features.h"

#include <cpuid.h>

#include <cstring>

namespace keel {

static bool os_saves_zmm() {
  unsigned a, b, c, d;
  __cpuid(1, a, b, c, d);
  if (!(c & (1u << 27))) return false;  // OSXSAVE
  unsigned lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (lo & 0xe6) == 0xe6;  // XMM, YMM, opmask, ZMM_Hi256, Hi16_ZMM
}

static bool os_saves_ymm() {
  unsigned a, b, c, d;
  __cpuid(1, a, b, c, d);
  if (!(c & (1u << 27))) return false;
  unsigned lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (lo & 0x6) == 0x6;
}

static CpuFeatures detect() {
  CpuFeatures f;
  unsigned a, b, c, d;
  __cpuid(1, a, b, c, d);
  bool ymm = os_saves_ymm();
  f.fma = ymm && (c & (1u << 12));
  f.f16c = ymm && (c & (1u << 29));
  if (__get_cpuid_max(0, nullptr) >= 7) {
    __cpuid_count(7, 0, a, b, c, d);
    f.avx2 = ymm && (b & (1u << 5));
    bool zmm = os_saves_zmm();
    f.avx512f = zmm && (b & (1u << 16));
    f.avx512dq = zmm && (b & (1u << 17));
    f.avx512bw = zmm && (b & (1u << 30));
    f.avx512vl = zmm && (b & (1u << 31));
    f.avx512_vnni = zmm && (c & (1u << 11));
    __cpuid_count(7, 1, a, b, c, d);
    f.avx512_bf16 = zmm && (a & (1u << 5));
    f.avx_vnni = ymm && (a & (1u << 4));
  }
  char brand[49] = {};
  if (__get_cpuid_max(0x80000000, nullptr) >= 0x80000004) {
    for (unsigned i = 0; i < 3; ++i) {
      __cpuid(0x80000002 + i, a, b, c, d);
      std::memcpy(brand + 16 * i, &a, 4);
      std::memcpy(brand + 16 * i + 4, &b, 4);
      std::memcpy(brand + 16 * i + 8, &c, 4);
      std::memcpy(brand + 16 * i + 12, &d, 4);
    }
  }
  f.brand = brand;
  return f;
}

std::string CpuFeatures::level() const {
  if (avx512f && avx512bw && avx512vl && avx512_bf16) return "avx512-bf16";
  if (avx512f && avx512bw && avx512vl) return "avx512";
  if (avx2 && fma) return "avx2";
  return "scalar";
}

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = detect();
  return f;
}

}  // namespace keel
