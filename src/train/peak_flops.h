// The FLOP/s that MFU is measured against: a short f32 GEMM on the training
// backend at startup (the best of a few repetitions), or a configured value.
#pragma once
#include "backend/backend.h"

namespace keel::train {

// Best GFLOP/s of an n x n x n f32 matmul over about `seconds` of repetitions.
double measure_sgemm_gflops(backend::Backend& be, int n = 512, double seconds = 0.3);

}  // namespace keel::train
