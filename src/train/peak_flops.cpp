#include "train/peak_flops.h"

#include <algorithm>
#include <chrono>

#include "backend/device_tensor.h"
#include "backend/ops.h"
#include "core/rng.h"

namespace keel::train {

double measure_sgemm_gflops(backend::Backend& be, int n, double seconds) {
  return measure_gemm_gflops(be, DType::F32, n, seconds);
}

double measure_gemm_gflops(backend::Backend& be, DType dt, int n, double seconds) {
  const Shape s{n, n};
  Tensor a = Tensor::zeros(s, DType::F32), b = Tensor::zeros(s, DType::F32),
         c = Tensor::zeros(s, DType::F32);
  Rng(0, 0).fill_uniform(a.data<float>(), a.numel(), -1.f, 1.f);
  Rng(0, 1).fill_uniform(b.data<float>(), b.numel(), -1.f, 1.f);
  if (dt != DType::F32) {
    a = a.to(dt);
    b = b.to(dt);
  }
  // Measured where the backend computes (a device's own memory); the clock
  // stops when the device has finished.
  a = backend::to_device(be, a, "peak measurement A");
  b = backend::to_device(be, b, "peak measurement B");
  c = backend::to_device(be, c, "peak measurement C");
  ops::matmul(be, a, false, b, false, c);  // warm-up: thread pools, page faults
  be.synchronize();
  const double flops = 2.0 * double(n) * n * n;
  double best = 0, total = 0;
  for (int rep = 0; rep < 100 && (rep < 3 || total < seconds); ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    ops::matmul(be, a, false, b, false, c);
    be.synchronize();
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    total += dt;
    best = std::max(best, flops / std::max(dt, 1e-9) / 1e9);
  }
  return best;
}

}  // namespace keel::train
