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

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "backend/backend.h"
#include "core/tensor.h"
#include "streaming_read.h"
#include "thread_timing.h"

namespace {

using keel::bench::median;
using keel::bench::thread_seconds;

volatile float g_sink = 0;

}  // namespace

int main(int argc, char** argv) {
  const int rounds = argc > 1 ? std::max(1, std::atoi(argv[1])) : 10;
  auto be = keel::backend::make_backend("cpu");
  be->set_threads(1);
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
        g_sink = keel::bench::streaming_sum(p, size_t(N * K));
        ts.push_back(thread_seconds() - t0);
      }
    const double gg = double(bytes) / median(tg) * 1e-9, gs = double(bytes) / median(ts) * 1e-9;
    std::printf("%5lldx%-5lld %10.2f %10.2f %7.2f\n", (long long)N, (long long)K, gg, gs, gg / gs);
    std::fflush(stdout);
  }
}
