// The FLOP/s that MFU is measured against: a short GEMM in the run's compute
// dtype on the training backend at startup (the best of a few repetitions),
// or a configured value. bf16 has its own peak: on CPUs with AVX512-BF16 its
// dot product does twice the work of f32's per instruction.
#pragma once
#include "backend/backend.h"
#include "core/dtype.h"

namespace keel::train {

// Best GFLOP/s of an n x n x n matmul with inputs of `dt` (F32 or BF16; f32
// accumulation and output) over about `seconds` of repetitions.
double measure_gemm_gflops(backend::Backend& be, DType dt, int n = 512, double seconds = 0.3);

// measure_gemm_gflops for f32.
double measure_sgemm_gflops(backend::Backend& be, int n = 512, double seconds = 0.3);

}  // namespace keel::train
