// Batch-1 f32 decode matvec (the cpu backend's GEMV, y = x W^T with one x
// row) on the shapes of a gpt2-124m-sized llama, on one thread, against the
// rate one core reads memory at all: a plain sum over the same bytes with
// eight independent accumulators. Timed in thread CPU time so that a busy
// machine does not distort it. Each weight is copied until the copies pass
// 256 MiB and the calls rotate through them (GEMV and sum a third of the
// copies apart), so every call reads from memory as in a real token. Prints
// the median GB of weights per CPU-second of each and their ratio: a GEMV
// near 1.0 is bound by what one core can pull from memory, not by its code.
// With threads > 1 the GEMV and the sum both run on the backend's decode
// team, timed by the wall clock, calls back to back as in a decode step.
//   bench_gemv [rounds] [threads]

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/gemv_team.h"
#include "core/tensor.h"
#include "streaming_read.h"
#include "thread_timing.h"

namespace {

using keel::bench::median;
using keel::bench::thread_seconds;

volatile float g_sink = 0;

double wall_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// With threads > 1: the sum on the GEMV's own thread team, in items of 64
// rows as the GEMV takes them, so both pay the same hand-offs and only the
// kernels differ (an OpenMP sum would leave its threads spinning beside the
// team's helpers on the next GEMV).
float team_sum(const float* p, int64_t rows, int64_t K, int threads) {
  if (threads <= 1) return keel::bench::streaming_sum(p, size_t(rows * K));
  const int64_t items = (rows + 63) / 64;
  std::vector<float> part(static_cast<size_t>(items));
  keel::backend::cpu::team_for(threads, items, [&](int64_t i) {
    const int64_t r0 = i * 64, r1 = std::min(rows, r0 + 64);
    part[size_t(i)] = keel::bench::streaming_sum(p + r0 * K, size_t((r1 - r0) * K));
  });
  float total = 0;
  for (float v : part) total += v;
  return total;
}

}  // namespace

int main(int argc, char** argv) {
  const int rounds = argc > 1 ? std::max(1, std::atoi(argv[1])) : 10;
  const int threads = argc > 2 ? std::max(1, std::atoi(argv[2])) : 1;
  auto be = keel::backend::make_backend("cpu");
  be->set_threads(threads);
  auto now = threads > 1 ? wall_seconds : thread_seconds;
  struct Shape {
    int64_t N, K;
  } shapes[] = {{2304, 768}, {768, 768}, {4096, 768}, {768, 2048}, {50257, 768}};
  std::printf("%-11s %10s %10s %7s   (GB of weights per %s, medians)\n", "N x K", "gemv", "read",
              "ratio", threads > 1 ? "second, wall clock" : "CPU-second");
  for (Shape sh : shapes) {
    const int64_t N = sh.N, K = sh.K;
    const size_t bytes = size_t(N * K) * sizeof(float);
    const size_t copies = std::max<size_t>(3, (size_t(256) << 20) / bytes);
    // Tensors: host_alloc backs large ones with 2 MiB pages, as a served model's weights.
    std::vector<keel::Tensor> w;
    for (size_t c = 0; c < copies; ++c) {
      w.push_back(keel::Tensor::zeros({N, K}, keel::DType::F32));
      float* p = w.back().data<float>();
      for (int64_t i = 0; i < N * K; ++i)
        p[i] = float(int((i * 2654435761u) % 2001) - 1000) * 1e-4f;
    }
    std::vector<float> x(static_cast<size_t>(K)), y(static_cast<size_t>(N));
    for (size_t i = 0; i < x.size(); ++i) x[i] = float(int(i * 7919 % 2001) - 1000) * 1e-3f;
    keel::backend::MatmulArgs a;
    a.trans_b = true;
    a.M = 1;
    a.N = N;
    a.K = K;
    a.lda = K;
    a.ldb = K;
    a.ldc = N;
    std::vector<double> tg, ts;
    for (int r = 0; r < rounds; ++r) {
      if (threads > 1) {
        // Back to back, as a decode step's matmuls run: the team's helpers
        // stay awake between calls, and OpenMP's sum threads do not spin
        // beside them.
        double t0 = now();
        for (size_t c = 0; c < copies; ++c) be->matmul(a, x.data(), w[c].raw(), y.data());
        tg.push_back((now() - t0) / double(copies));
        t0 = now();
        for (size_t c = 0; c < copies; ++c) g_sink = team_sum(w[c].data<float>(), N, K, threads);
        ts.push_back((now() - t0) / double(copies));
        continue;
      }
      for (size_t c = 0; c < copies; ++c) {
        double t0 = now();
        be->matmul(a, x.data(), w[c].raw(), y.data());
        tg.push_back(now() - t0);
        const float* p = w[(c + copies / 3) % copies].data<float>();
        t0 = now();
        g_sink = keel::bench::streaming_sum(p, size_t(N * K));
        ts.push_back(now() - t0);
      }
    }
    const double gg = double(bytes) / median(tg) * 1e-9, gs = double(bytes) / median(ts) * 1e-9;
    std::printf("%5lldx%-5lld %10.2f %10.2f %7.2f\n", (long long)N, (long long)K, gg, gs, gg / gs);
    std::fflush(stdout);
  }
}
