// The fast CPU backend: BLAS for GEMM, AVX-512 / AVX2 kernels chosen at run
// time (scalar fallback), OpenMP over fixed partitions so results never depend
// on the thread count.
#pragma once
#include <memory>

#include "backend/backend.h"

namespace keel::backend {

std::unique_ptr<Backend> make_cpu_backend();

}  // namespace keel::backend
