// What the host CPU can run, read once with cpuid, so fast paths are chosen at
// run time and the same binary still runs (scalar) on a CPU without AVX-512.
#pragma once
#include <string>

namespace keel {

struct CpuFeatures {
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false;
  bool avx512_vnni = false, avx512_bf16 = false, avx_vnni = false;
  std::string brand;
  // "avx512-bf16", "avx512", "avx2" or "scalar": the best vector level keel uses.
  std::string level() const;
};

const CpuFeatures& cpu_features();

}  // namespace keel
