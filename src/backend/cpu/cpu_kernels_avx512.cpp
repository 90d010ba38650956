// The cpu kernels instantiated at the avx512 level. Built with the AVX-512
// flags (CMake, by file name); chosen only when cpuid reports AVX-512 F/BW/VL.
// GCC 12's AVX-512 intrinsic headers start several conversions from
// _mm512_undefined_*(), which -W(maybe-)uninitialized reports as a false error.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
// GCC fuses a*b+c into an FMA in C++ whenever -mfma is on, even in ISO mode
// and through intrinsics. The kernels say where they want an FMA (S::fma);
// every other product is rounded, so the same source gives the same bits at
// every level and cancellations such as g - mean(g) for one column are exact.
#pragma GCC optimize("fp-contract=off")
#define KEEL_CPU_ISA avx512
#include "backend/cpu/cpu_kernels_impl.h"

namespace keel::backend::cpu {

const KernelTable& kernels_avx512() {
  static const KernelTable t = avx512::make_table<avx512::Avx512>();
  return t;
}

}  // namespace keel::backend::cpu
