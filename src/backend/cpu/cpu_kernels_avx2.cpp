// The cpu kernels instantiated at the avx2 level, built with -mavx2 -mfma
// -mf16c (CMake gives those flags by file name).
// GCC fuses a*b+c into an FMA in C++ whenever -mfma is on, even in ISO mode
// and through intrinsics. The kernels say where they want an FMA (S::fma);
// every other product is rounded, so the same source gives the same bits at
// every level and cancellations such as g - mean(g) for one column are exact.
#pragma GCC optimize("fp-contract=off")
#define KEEL_CPU_ISA avx2
#include "backend/cpu/cpu_kernels_impl.h"

namespace keel::backend::cpu {

const KernelTable& kernels_avx2() {
  static const KernelTable t = avx2::make_table<avx2::Avx2>();
  return t;
}

}  // namespace keel::backend::cpu
