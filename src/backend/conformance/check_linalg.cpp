// Conformance of the linear-algebra families: matmul (every transpose, padded
// leading dimensions, batches with gaps, shared B, alpha/beta), quantize /
// dequantize and quantized matmul.
#include <array>

#include <fmt/format.h>

#include "backend/conformance/families.h"

namespace keel::backend::conformance {

namespace {

struct MatmulDtypes {
  DType a, c;
  const char* label;
};

}  // namespace

void check_matmul(Harness& h) {
  if (!h.wants(Kernel::Matmul)) return;
  // (M, N, K): sizes from kSizes in rotation, so each size meets each role.
  using Mnk = std::array<int64_t, 3>;
  const std::vector<Mnk> shapes = h.pick<Mnk>({{1, 1, 1},
                                               {1, 3, 7},
                                               {3, 7, 17},
                                               {7, 17, 33},
                                               {17, 33, 64},
                                               {33, 64, 100},
                                               {64, 100, 257},
                                               {100, 257, 1},
                                               {257, 1, 3},
                                               {3, 1, 257},
                                               {17, 100, 3},
                                               {64, 64, 64}},
                                              {{257, 300, 513}, {1024, 96, 256}});
  for (MatmulDtypes dts : {MatmulDtypes{DType::F32, DType::F32, "f32"},
                           MatmulDtypes{DType::BF16, DType::F32, "bf16->f32"},
                           MatmulDtypes{DType::BF16, DType::BF16, "bf16"}}) {
    // Accumulation is f32 in every combination; only the output rounding differs.
    if (!h.row(Kernel::Matmul, "matmul", dts.label, Direction::Forward, 2e-5, {dts.a})) continue;
    int variant = 0;
    for (const auto& s : shapes) {
      for (int t = 0; t < 4; ++t, ++variant) {
        MatmulArgs a;
        a.trans_a = t & 1;
        a.trans_b = t & 2;
        a.M = s[0], a.N = s[1], a.K = s[2];
        a.a_dtype = a.b_dtype = dts.a;
        a.c_dtype = dts.c;
        // Variants: 0 plain; 1 padded rows, alpha; 2 batch with gaps, beta = 1
        // (accumulate); 3 batch sharing B (stride 0), alpha and negative beta.
        int v = variant % 4;
        int64_t pad = v == 1 || v == 2 ? 5 : 0;
        int64_t ra = a.trans_a ? a.K : a.M, ca = a.trans_a ? a.M : a.K;
        int64_t rb = a.trans_b ? a.N : a.K, cb = a.trans_b ? a.K : a.N;
        a.lda = ca + pad, a.ldb = cb + pad, a.ldc = a.N + pad;
        a.batch = v == 2 ? 3 : v == 3 ? 2 : 1;
        int64_t gap = v == 2 ? 9 : 0;
        a.stride_a = ra * a.lda + gap;
        a.stride_b = v == 3 ? 0 : rb * a.ldb + gap;
        a.stride_c = a.M * a.ldc + gap;
        a.alpha = v == 1 ? 0.5f : v == 3 ? 2.f : 1.f;
        a.beta = v == 2 ? 1.f : v == 3 ? -0.5f : 0.f;
        Gen g = h.gen();
        Io io;
        io.in.emplace_back("A", dts.a, (a.batch - 1) * a.stride_a + ra * a.lda);
        io.in.emplace_back("B", dts.a, (a.batch - 1) * a.stride_b + rb * a.ldb);
        io.out.emplace_back("C", dts.c, (a.batch - 1) * a.stride_c + a.M * a.ldc);
        g.normal(io.in[0], 1.f);
        g.normal(io.in[1], 1.f);
        g.normal(io.out[0], 1.f);
        std::string desc =
            fmt::format("{} batch={} trans_a={} trans_b={} ld=({},{},{}) alpha={} beta={}",
                        dims({{"M", a.M}, {"N", a.N}, {"K", a.K}}), a.batch, a.trans_a, a.trans_b,
                        a.lda, a.ldb, a.ldc, a.alpha, a.beta);
        h.run(desc, io, [a](Backend& be, Io& x) { be.matmul(a, x.i(0), x.i(1), x.o(0)); });
      }
    }
  }
}

void check_quantize(Harness& h) {
  if (!h.wants(Kernel::Quantize)) return;
  for (DType q : {DType::I8, DType::Q8_0, DType::Q4_0}) {
    const bool blocked = dtype_is_blocked(q);
    auto ks_for = [blocked](int64_t N) {
      return blocked ? Harness::either(N == 128, {32, 64, 96, 256, 320}, {4096})
                     : Harness::either(N == 128, {1, 3, 7, 17, 33, 64, 100, 257}, {4099});
    };
    // Codes must agree: quantization is defined to the rounding rule, and a
    // GGUF export depends on it. One code off exceeds 1e-6 of the rms.
    if (h.row(Kernel::Quantize, "quantize", std::string(dtype_name(q)), Direction::Forward, 1e-6,
              {q})) {
      for (int64_t N : h.pick<int64_t>({1, 3, 17}, {128})) {
        for (int64_t K : ks_for(N)) {
          Gen g = h.gen();
          Io io;
          io.in.emplace_back("w", DType::F32, N * K);
          g.normal(io.in[0], 1.f);
          // An all-zero row (scale 0) and a row with one outlier.
          if (N > 1)
            for (int64_t k = 0; k < K; ++k) io.in[0].set(k, 0.f);
          if (N > 2) io.in[0].set(2 * K + K / 2, 40.f);
          io.out.emplace_back("q", q, N * K);
          if (!blocked) io.out.emplace_back("scale", DType::F32, N);
          h.run(dims({{"N", N}, {"K", K}}), io, [q, N, K, blocked](Backend& be, Io& x) {
            be.quantize(q, x.it<float>(0), x.o(0), blocked ? nullptr : x.ot<float>(1), N, K);
          });
        }
      }
    }
    if (h.row(Kernel::Quantize, "dequantize", std::string(dtype_name(q)), Direction::Forward, 1e-7,
              {q})) {
      for (int64_t N : {1, 3, 17}) {
        for (int64_t K : ks_for(N)) {
          Gen g = h.gen();
          Buffer w("w", DType::F32, N * K);
          g.normal(w, 2.f);
          Io io;
          io.in.emplace_back("q", q, N * K);
          io.in.emplace_back("scale", DType::F32, blocked ? 0 : N);
          h.input_backend().quantize(q, w.as<float>(), io.in[0].data(),
                                     blocked ? nullptr : io.in[1].as<float>(), N, K);
          io.out.emplace_back("w", DType::F32, N * K);
          g.normal(io.out[0], 1.f);
          h.run(dims({{"N", N}, {"K", K}}), io, [q, N, K, blocked](Backend& be, Io& x) {
            be.dequantize(q, x.i(0), blocked ? nullptr : x.it<float>(1), x.ot<float>(0), N, K);
          });
        }
      }
    }
  }
}

void check_qmatmul(Harness& h) {
  if (!h.wants(Kernel::QMatmul)) return;
  for (DType q : {DType::I8, DType::Q8_0, DType::Q4_0}) {
    const bool blocked = dtype_is_blocked(q);
    // Integer dot products are exact; what remains is the f32 scaling and the
    // order in which per-block partial sums are added.
    if (!h.row(Kernel::QMatmul, "qmatmul", std::string(dtype_name(q)), Direction::Forward, 1e-4,
               {q}))
      continue;
    std::vector<int64_t> ks =
        blocked ? std::vector<int64_t>{32, 64, 256} : std::vector<int64_t>{7, 33, 100, 257};
    for (int64_t M : h.pick<int64_t>({1, 3, 17}, {64})) {
      for (int64_t N : h.either(M == 64, {1, 7, 33, 100}, {512})) {
        for (int64_t K : ks) {
          Gen g = h.gen();
          Buffer w("w", DType::F32, N * K);
          g.normal(w, 1.f);
          Io io;
          io.in.emplace_back("x", DType::F32, M * K);
          g.normal(io.in[0], 1.f);
          io.in.emplace_back("wq", q, N * K);
          io.in.emplace_back("wscale", DType::F32, blocked ? 0 : N);
          h.input_backend().quantize(q, w.as<float>(), io.in[1].data(),
                                     blocked ? nullptr : io.in[2].as<float>(), N, K);
          io.out.emplace_back("y", DType::F32, M * N);
          g.normal(io.out[0], 1.f);
          h.run(dims({{"M", M}, {"N", N}, {"K", K}}), io,
                [q, M, N, K, blocked](Backend& be, Io& x) {
                  be.qmatmul(q, x.it<float>(0), x.i(1), blocked ? nullptr : x.it<float>(2),
                             x.ot<float>(0), M, N, K);
                });
        }
      }
    }
  }
}

}  // namespace keel::backend::conformance
