// The Vulkan runtime's kernels on the chosen device (KEEL_VULKAN_DEVICE) beside
// the cpu backend in the same run: one JSON line per kernel, GFLOP/s for GEMM
// and GB/s for the memory-bound kernels. On lavapipe (a CPU device) the point
// is that the runtime works, not its speed.
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "bench_util.h"

#ifdef KEEL_HAVE_VULKAN
#include "backend/vulkan/vk_context.h"
#include "backend/vulkan/vk_kernels.h"
#include "backend/vulkan/vk_memory_pool.h"
#include "backend/vulkan/vk_stream.h"

namespace {

using keel::DType;
using keel::backend::MatmulArgs;
namespace vk = keel::vulkan;

// Seconds per call of f, after one warm-up, over enough calls for ~0.5 s.
template <class F>
double per_call(F&& f) {
  f();
  int reps = 1;
  for (;;) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < reps; ++i) f();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (s > 0.5 || reps >= 1 << 16) return s / reps;
    reps *= 2;
  }
}

template <class T>
vk::Buffer upload(vk::Context& ctx, const std::vector<T>& v) {
  vk::Buffer b = ctx.pool().alloc(v.size() * sizeof(T));
  ctx.stream().upload(b, v.data(), v.size() * sizeof(T));
  return b;
}

void line(const vk::Context& ctx, const std::string& kernel, const std::string& shape,
          const char* unit, double vk_rate, double cpu_rate) {
  const bool cpu_device = ctx.info().type == "cpu";
  std::printf(
      "{\"bench\": \"vulkan\", \"kernel\": \"%s\", \"shape\": \"%s\", \"device\": \"%s\", "
      "\"vulkan_%s\": %.2f, \"cpu_backend_%s\": %.2f, \"note\": \"%s\"}\n",
      kernel.c_str(), shape.c_str(), ctx.info().name.c_str(), unit, vk_rate, unit, cpu_rate,
      cpu_device ? "CPU Vulkan device (lavapipe): the point is correctness, not speed"
                 : "GPU device");
  std::fflush(stdout);
}

void bench_matmul(vk::Context& ctx, int64_t n, DType dt) {
  MatmulArgs a;
  a.M = a.N = a.K = n;
  a.lda = a.ldb = a.ldc = n;
  a.trans_b = true;  // weights stored out x in, as in a linear layer
  a.a_dtype = a.b_dtype = dt;
  auto& cpu = keel::bench::cpu();
  const double flop = 2.0 * double(n) * double(n) * double(n);
  std::vector<float> C(size_t(n * n));
  vk::Buffer vC = ctx.pool().alloc(C.size() * 4);
  double tv = 0, tc = 0;
  const auto time_both = [&](const auto& A, const auto& B) {
    vk::Buffer vA = upload(ctx, A), vB = upload(ctx, B);
    tv = per_call([&] {
      vk::matmul(ctx, a, vA, vB, vC);
      ctx.stream().synchronize();
    });
    tc = per_call([&] { cpu.matmul(a, A.data(), B.data(), C.data()); });
    ctx.pool().free(vA);
    ctx.pool().free(vB);
  };
  if (dt == DType::F32)
    time_both(keel::bench::filled(size_t(n * n), 1.f, 1),
              keel::bench::filled(size_t(n * n), 1.f, 2));
  else
    time_both(keel::bench::filled_bf16(size_t(n * n), 1.f, 1),
              keel::bench::filled_bf16(size_t(n * n), 1.f, 2));
  ctx.pool().free(vC);
  const std::string s = std::to_string(n);
  line(ctx, dt == DType::F32 ? "matmul_f32" : "matmul_bf16_f32", s + "x" + s + "x" + s + "/NT",
       "gflop_s", flop / tv * 1e-9, flop / tc * 1e-9);
}

void bench_memory(vk::Context& ctx) {
  auto& cpu = keel::bench::cpu();
  const int64_t n = 16 << 20;
  auto x = keel::bench::filled(size_t(n), 1.f, 3), y = keel::bench::filled(size_t(n), 1.f, 4);
  std::vector<float> out(static_cast<size_t>(n));
  vk::Buffer vx = upload(ctx, x), vy = upload(ctx, y), vo = ctx.pool().alloc(size_t(n) * 4);
  // add: two reads and one write per element
  double tv = per_call([&] {
    vk::add(ctx, DType::F32, vx, vy, vo, n);
    ctx.stream().synchronize();
  });
  double tc = per_call([&] { cpu.add(DType::F32, x.data(), y.data(), out.data(), n); });
  line(ctx, "add_f32", std::to_string(n), "gb_s", 12.0 * n / tv * 1e-9, 12.0 * n / tc * 1e-9);
  // rmsnorm: read x, write y (the weight row stays in cache)
  const int64_t N = 4096, C = n / N;
  std::vector<float> rstd(static_cast<size_t>(N));
  vk::Buffer vw = upload(ctx, std::vector<float>(size_t(C), 1.f)),
             vr = ctx.pool().alloc(size_t(N) * 4);
  std::vector<float> w(size_t(C), 1.f);
  tv = per_call([&] {
    vk::rmsnorm_forward(ctx, DType::F32, vx, vw, vo, vr, N, C, 1e-5f);
    ctx.stream().synchronize();
  });
  tc = per_call([&] {
    cpu.rmsnorm_forward(DType::F32, x.data(), w.data(), out.data(), rstd.data(), N, C, 1e-5f);
  });
  line(ctx, "rmsnorm_f32", std::to_string(N) + "x" + std::to_string(C), "gb_s", 8.0 * n / tv * 1e-9,
       8.0 * n / tc * 1e-9);
  // sum of squares: one read per element (includes the 4-byte download)
  tv = per_call([&] { (void)vk::sum_squares(ctx, DType::F32, vx, n); });
  tc = per_call([&] { (void)cpu.sum_squares_host(DType::F32, x.data(), n); });
  line(ctx, "sum_squares_f32", std::to_string(n), "gb_s", 4.0 * n / tv * 1e-9, 4.0 * n / tc * 1e-9);
  for (auto* b : {&vx, &vy, &vo, &vw, &vr}) ctx.pool().free(*b);
}

}  // namespace

int main() {
  try {
    vk::Context ctx;
    bench_matmul(ctx, 512, DType::F32);
    bench_matmul(ctx, 512, DType::BF16);
    bench_memory(ctx);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_vulkan: %s\n", e.what());
    return 1;
  }
  return 0;
}

#else
int main() {
  std::printf("{\"bench\": \"vulkan\", \"skipped\": \"built without Vulkan (KEEL_VULKAN=OFF)\"}\n");
  return 0;
}
#endif
