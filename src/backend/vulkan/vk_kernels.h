// Kernels on the Vulkan runtime, each a function a backend will call with
// device buffers in place of host pointers. They record into ctx.stream()
// and return without waiting; results are there after synchronize().
#pragma once
#include <cstdint>

#include "backend/backend.h"
#include "backend/vulkan/vk_context.h"
#include "backend/vulkan/vk_memory_pool.h"

namespace keel::vulkan {

// backend.h's MatmulArgs over device buffers: (a,b,c) dtypes (F32,F32,F32),
// (BF16,BF16,F32) or (BF16,BF16,BF16); f32 accumulation in ascending k.
void matmul(Context& ctx, const backend::MatmulArgs& a, const Buffer& A, const Buffer& B,
            const Buffer& C);
// y = a + b (F32 or BF16; y may alias a or b).
void add(Context& ctx, DType dt, const Buffer& a, const Buffer& b, const Buffer& y, int64_t n);
// RMSNorm forward over rows (N, C): y = x * rstd * w, rstd f32 (N).
void rmsnorm_forward(Context& ctx, DType dt, const Buffer& x, const Buffer& w, const Buffer& y,
                     const Buffer& rstd, int64_t N, int64_t C, float eps);
// out[0] (f32) = sum of x[i]^2 over fixed 4096-element chunks combined in a
// fixed order; `partials` holds sum_squares_partials(n) floats.
void sum_squares(Context& ctx, DType dt, const Buffer& x, int64_t n, const Buffer& partials,
                 const Buffer& out);
int64_t sum_squares_partials(int64_t n);
// Convenience: allocates scratch, runs sum_squares and synchronizes.
double sum_squares(Context& ctx, DType dt, const Buffer& x, int64_t n);

}  // namespace keel::vulkan
