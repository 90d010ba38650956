// The cpu kernels instantiated at the scalar level. No -m flags: runs on any x86-64.
// GCC fuses a*b+c into an FMA in C++ whenever -mfma is on, even in ISO mode
// and through intrinsics. The kernels say where they want an FMA (S::fma);
// every other product is rounded, so the same source gives the same bits at
// every level and cancellations such as g - mean(g) for one column are exact.
#pragma GCC optimize("fp-contract=off")
#define KEEL_CPU_ISA scalar
#include "backend/cpu/cpu_kernels_impl.h"

namespace keel::backend::cpu {

const KernelTable& kernels_scalar() {
  static const KernelTable t = scalar::make_table<scalar::Scalar>();
  return t;
}

}  // namespace keel::backend::cpu
