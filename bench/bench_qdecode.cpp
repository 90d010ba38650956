// Batch-1 decode matvec on the shapes of a gpt2-124m-sized llama, plain
// quantized layout (qmatmul) against the backend's packed one
// (qmatmul_packed), on one thread, timed in thread CPU time so that a busy
// machine does not distort it. Each weight is copied until the copies pass
// 256 MiB and the calls rotate through them, so weights come from memory as
// in a real token, on 2 MiB pages like the served model's. The two layouts
// alternate call by call; prints the median weight bytes per CPU-second of
// each. KEEL_QDECODE_SHAPES=7b takes a 7B llama's shapes instead (K = 4096
// and 11008: packed groups of several runs).
//   bench_qdecode [rounds]

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "core/dtype.h"
#include "core/host_memory.h"
#include "thread_timing.h"

namespace {

using keel::DType;
using keel::bench::median;
using keel::bench::thread_seconds;

// Copies back to back in one buffer of 2 MiB pages, as the served model's
// weights are (InferenceModel::gather_weights): on 4 KiB heap pages every
// format read 10-40% slower.
struct Copies {
  Copies(size_t each, size_t n) : stride((each + 63) / 64 * 64), bytes(stride * n) {
    base = static_cast<char*>(keel::host_alloc(bytes, size_t(2) << 20));
  }
  ~Copies() { keel::host_free(base, bytes, size_t(2) << 20); }
  Copies(const Copies&) = delete;
  Copies& operator=(const Copies&) = delete;
  char* operator[](size_t c) const { return base + c * stride; }
  size_t stride, bytes;
  char* base;
};

struct Weights {
  std::unique_ptr<Copies> q, p;  // plain and packed copies
  std::vector<std::vector<float>> s;
  size_t plain_bytes = 0;
};

}  // namespace

int main(int argc, char** argv) {
  const int rounds = argc > 1 ? std::atoi(argv[1]) : 30;
  // KEEL_QDECODE_M=128: prefill-shaped calls instead (same weight bytes counted).
  const int64_t M = std::getenv("KEEL_QDECODE_M") ? std::atoll(std::getenv("KEEL_QDECODE_M")) : 1;
  auto be = keel::backend::make_backend("cpu");
  be->set_threads(1);
  struct Shape {
    int64_t N, K;
  };
  const char* which = std::getenv("KEEL_QDECODE_SHAPES");
  const std::vector<Shape> shapes =
      which && std::string(which) == "7b"
          ? std::vector<Shape>{{4096, 4096}, {11008, 4096}, {4096, 11008}}
          : std::vector<Shape>{{768, 768}, {2048, 768}, {768, 2048}, {50257, 768}};
  std::printf("%-6s %-11s %10s %10s %7s   (GB of plain weights per CPU-second, medians)\n",
              "format", "N x K", "plain", "packed", "ratio");
  for (DType qdt : {DType::I8, DType::Q8_0, DType::Q4_0}) {
    for (Shape sh : shapes) {
      const int64_t N = sh.N, K = sh.K;
      const size_t pb = be->qpack_bytes(qdt, N, K);
      std::vector<float> w(static_cast<size_t>(N * K)), x(static_cast<size_t>(M * K)),
          y(static_cast<size_t>(M * N));
      uint32_t r = 1;
      for (float& v : w)
        v = float(int32_t((r = r * 1664525u + 1013904223u) >> 8) % 2001 - 1000) * 1e-4f;
      for (float& v : x)
        v = float(int32_t((r = r * 1664525u + 1013904223u) >> 8) % 2001 - 1000) * 1e-3f;
      Weights W;
      W.plain_bytes = keel::dtype_bytes(qdt, size_t(N * K));
      // KEEL_QDECODE_IN_CACHE=1: one copy, so the kernels' compute bound shows.
      const bool in_cache = std::getenv("KEEL_QDECODE_IN_CACHE") != nullptr;
      const size_t copies = in_cache ? 1 : std::max<size_t>(2, (size_t(256) << 20) / W.plain_bytes);
      W.q = std::make_unique<Copies>(W.plain_bytes, copies);
      if (pb) W.p = std::make_unique<Copies>(pb, copies);
      for (size_t c = 0; c < copies; ++c) {
        W.s.emplace_back(size_t(N));
        be->quantize(qdt, w.data(), (*W.q)[c], qdt == DType::I8 ? W.s.back().data() : nullptr, N,
                     K);
        if (pb) be->qpack(qdt, (*W.q)[c], W.s.back().data(), (*W.p)[c], N, K);
      }
      std::vector<double> tp, tk;
      size_t c = 0;
      for (int i = 0; i < rounds; ++i)
        for (size_t j = 0; j < copies; ++j, c = (c + 1) % copies) {
          double t0 = thread_seconds();
          be->qmatmul(qdt, x.data(), (*W.q)[c], W.s[c].data(), y.data(), M, N, K);
          tp.push_back(thread_seconds() - t0);
          if (!pb) continue;
          t0 = thread_seconds();
          be->qmatmul_packed(qdt, x.data(), (*W.p)[c], y.data(), M, N, K);
          tk.push_back(thread_seconds() - t0);
        }
      const double gp = double(W.plain_bytes) / median(tp) * 1e-9;
      const double gk = pb ? double(W.plain_bytes) / median(tk) * 1e-9 : 0.0;
      std::printf("%-6s %5lldx%-5lld %10.2f %10.2f %7.2f\n", keel::dtype_name(qdt).data(),
                  (long long)N, (long long)K, gp, gk, pb ? gk / gp : 0.0);
      std::fflush(stdout);
    }
  }
}
