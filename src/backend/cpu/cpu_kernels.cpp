// Chooses the vector level of the cpu kernels: the best the CPU runs, capped
// by KEEL_CPU_LEVEL so tests and users can force a slower path.
#include "backend/cpu/cpu_kernels.h"

#include <cstdlib>
#include <string>

#include "core/cpu_features.h"
#include "core/error.h"

namespace keel::backend::cpu {

std::string_view level_name(Level l) {
  switch (l) {
    case Level::Scalar:
      return "scalar";
    case Level::Avx2:
      return "avx2";
    case Level::Avx512:
      return "avx512";
  }
  return "?";
}

Level parse_level(std::string_view s) {
  if (s == "scalar") return Level::Scalar;
  if (s == "avx2") return Level::Avx2;
  if (s == "avx512" || s == "avx512-bf16") return Level::Avx512;
  fail("KEEL_CPU_LEVEL='{}' is not a vector level (expected scalar, avx2 or avx512)", s);
}

bool level_available(Level l) {
  const CpuFeatures& f = cpu_features();
  switch (l) {
    case Level::Scalar:
      return true;
    case Level::Avx2:
      return f.avx2 && f.fma && f.f16c;
    case Level::Avx512:
      return f.avx512f && f.avx512bw && f.avx512vl && f.f16c;
  }
  return false;
}

Level detect_level() {
  Level best = Level::Scalar;
  for (Level l : {Level::Avx2, Level::Avx512})
    if (level_available(l)) best = l;
  if (const char* env = std::getenv("KEEL_CPU_LEVEL"); env && *env) {
    Level cap = parse_level(env);
    if (cap < best) best = cap;
  }
  return best;
}

const KernelTable& kernels_for(Level l) {
  switch (l) {
    case Level::Avx512:
      return kernels_avx512();
    case Level::Avx2:
      return kernels_avx2();
    default:
      return kernels_scalar();
  }
}

}  // namespace keel::backend::cpu
