// Batch-1 f32 decode matvec (the cpu backend's GEMV, y = x W^T with one x
// row) on the shapes of a gpt2-124m-sized llama, on one thread, against the
// rate one core reads memory at all: a plain sum over the same bytes with
// eight independent accumulators. Timed in thread CPU time so that a busy
// machine does not distort it. Each weight is copied until the copies pass
// 256 MiB and the calls rotate through them (GEMV and sum a third of the
// copies apart), so every call reads from memory as in a real token. Prints
// the median GB of weights per CPU-second of each and their ratio: a GEMV
// near 1.0 is bound by what one core can pull from memory, not by its code.
//   bench_gemv [rounds]
#include <immintrin.h>
#include <time.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "backend/backend.h"
#include "core/cpu_features.h"
#include "core/tensor.h"

namespace {

double thread_seconds() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return double(t.tv_sec) + 1e-9 * double(t.tv_nsec);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Sum of n floats with eight 8-lane accumulators: enough loads in flight to
// stream at the memory's speed (the generic build of this file is SSE2 only).
__attribute__((target("avx2"))) float sum_avx2(const float* p, size_t n) {
  __m256 acc[8];
  for (auto& v : acc) v = _mm256_setzero_ps();
  for (size_t i = 0; i + 64 <= n; i += 64)
    for (int j = 0; j < 8; ++j) acc[j] = _mm256_add_ps(acc[j], _mm256_loadu_ps(p + i + 8 * j));
  for (int j = 1; j < 8; ++j) acc[0] = _mm256_add_ps(acc[0], acc[j]);
  alignas(32) float t[8];
  _mm256_store_ps(t, acc[0]);
  return t[0] + t[1] + t[2] + t[3] + t[4] + t[5] + t[6] + t[7];
}

float sum_generic(const float* p, size_t n) {
  float acc[16] = {};
  for (size_t i = 0; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; ++j) acc[j] += p[i + size_t(j)];
  float t = 0;
  for (float a : acc) t += a;
  return t;
}

volatile float g_sink = 0;

}  // namespace

int main(int argc, char** argv) {
  const int rounds = argc > 1 ? std::max(1, std::atoi(argv[1])) : 10;
  auto be = keel::backend::make_backend("cpu");
  be->set_threads(1);
  const bool avx2 = keel::cpu_features().avx2;
  struct Shape {
    int64_t N, K;
  } shapes[] = {{2304, 768}, {768, 768}, {4096, 768}, {768, 2048}, {50257, 768}};
  std::printf("%-11s %10s %10s %7s   (GB of weights per CPU-second, medians)\n", "N x K", "gemv",
              "read", "ratio");
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
    for (int r = 0; r < rounds; ++r)
      for (size_t c = 0; c < copies; ++c) {
        double t0 = thread_seconds();
        be->matmul(a, x.data(), w[c].raw(), y.data());
        tg.push_back(thread_seconds() - t0);
        const float* p = w[(c + copies / 3) % copies].data<float>();
        t0 = thread_seconds();
        g_sink = avx2 ? sum_avx2(p, size_t(N * K)) : sum_generic(p, size_t(N * K));
        ts.push_back(thread_seconds() - t0);
      }
    const double gg = double(bytes) / median(tg) * 1e-9, gs = double(bytes) / median(ts) * 1e-9;
    std::printf("%5lldx%-5lld %10.2f %10.2f %7.2f\n", (long long)N, (long long)K, gg, gs, gg / gs);
    std::fflush(stdout);
  }
}
