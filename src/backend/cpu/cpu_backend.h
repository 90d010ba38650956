// The fast CPU backend: BLAS for GEMM, AVX-512 / AVX2 kernels chosen at run
// time (scalar fallback), OpenMP over fixed partitions so results never depend
// on the thread count.
#pragma once
#include <memory>
#include <string_view>

#include "backend/backend.h"

namespace keel::backend {

// Vector level from cpuid, capped by the KEEL_CPU_LEVEL environment variable.
std::unique_ptr<Backend> make_cpu_backend();
// Forces a vector level ("scalar", "avx2", "avx512"); throws keel::Error when
// the name is unknown or this CPU cannot run that level.
std::unique_ptr<Backend> make_cpu_backend(std::string_view level);

}  // namespace keel::backend
