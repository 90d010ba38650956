// Conformance of the row-wise families: embedding, layernorm and rmsnorm,
// forward and (accumulating) backward.
#include <array>

#include <fmt/format.h>

#include "backend/conformance/families.h"

namespace keel::backend::conformance {

void check_embedding(Harness& h) {
  if (!h.wants(Kernel::Embedding)) return;
  using Vn = std::array<int64_t, 2>;  // (V, n)
  const std::vector<Vn> vns = h.pick<Vn>({{1, 7}, {17, 33}, {100, 1}}, {{1000, 1025}});
  for (DType dt : activation_dtypes(h, Kernel::Embedding)) {
    const std::string dn(dtype_name(dt));
    if (h.row(Kernel::Embedding, "embedding", dn, Direction::Forward, 2e-5, {dt})) {
      for (const auto& vn : vns) {
        for (int64_t C : h.either(vn[0] == 1000, {1, 3, 7, 17, 33, 64, 100, 257}, {512})) {
          int64_t V = vn[0], n = vn[1];
          Gen g = h.gen();
          Io io;
          io.in.emplace_back("ids", DType::I32, n);
          for (int64_t i = 0; i < n; ++i) io.in[0].set(i, float(g.below(V)));
          io.in.emplace_back("table", dt, V * C);
          g.normal(io.in[1], 1.f);
          io.out.emplace_back("out", dt, n * C);
          g.normal(io.out[0], 1.f);
          h.run(dims({{"V", V}, {"n", n}, {"C", C}}), io, [dt, n, C](Backend& be, Io& x) {
            be.embedding_forward(dt, x.it<int32_t>(0), x.i(1), x.o(0), n, C);
          });
        }
      }
    }
    if (h.row(Kernel::Embedding, "embedding", dn, Direction::Backward, 2e-5, {dt})) {
      for (const auto& vn : vns) {
        for (int64_t C : h.either(vn[0] == 1000, {1, 3, 7, 17, 33, 64, 100, 257}, {512})) {
          // n > V repeats ids, so rows of dtable receive several additions.
          int64_t V = vn[0], n = vn[1];
          Gen g = h.gen();
          Io io;
          io.in.emplace_back("ids", DType::I32, n);
          for (int64_t i = 0; i < n; ++i) io.in[0].set(i, float(g.below(V)));
          io.in.emplace_back("dout", dt, n * C);
          g.normal(io.in[1], 1.f);
          io.out.emplace_back("dtable", DType::F32, V * C);
          g.normal(io.out[0], 1.f);
          h.run(dims({{"V", V}, {"n", n}, {"C", C}}), io, [dt, n, C](Backend& be, Io& x) {
            be.embedding_backward(dt, x.it<int32_t>(0), x.i(1), x.ot<float>(0), n, C);
          });
        }
      }
    }
  }
}

void check_layernorm(Harness& h) {
  if (!h.wants(Kernel::LayerNorm)) return;
  const float eps = 1e-5f;
  for (DType dt : activation_dtypes(h, Kernel::LayerNorm)) {
    const std::string dn(dtype_name(dt));
    for (Direction dir : {Direction::Forward, Direction::Backward}) {
      if (!h.row(Kernel::LayerNorm, "layernorm", dn, dir, 2e-5, {dt})) continue;
      int c = 0;
      for (int64_t N : h.pick<int64_t>({1, 3, 17, 64}, {512})) {
        for (int64_t C : h.either(N == 512, {1, 3, 7, 17, 33, 64, 100, 257}, {769})) {
          const bool bias = ++c % 2 == 0;
          Gen g = h.gen();
          Io io;
          // Rows with a mean well away from 0 punish a one-pass variance.
          Buffer x("x", dt, N * C), w("w", dt, C), b("b", dt, C);
          g.normal(x, 2.f, 3.f);
          g.normal(w, 0.2f, 1.f);
          g.normal(b, 0.2f);
          std::string desc = dims({{"N", N}, {"C", C}}) + (bias ? " bias" : " no-bias");
          if (dir == Direction::Forward) {
            io.in = {x, w, b};
            io.out.emplace_back("y", dt, N * C);
            io.out.emplace_back("mean", DType::F32, N);
            io.out.emplace_back("rstd", DType::F32, N);
            for (auto& o : io.out) g.normal(o, 1.f);
            h.run(desc, io, [dt, N, C, bias, eps](Backend& be, Io& x) {
              be.layernorm_forward(dt, x.i(0), x.i(1), bias ? x.i(2) : nullptr, x.o(0),
                                   x.ot<float>(1), x.ot<float>(2), N, C, eps);
            });
          } else {
            Buffer y("y", dt, N * C), mean("mean", DType::F32, N), rstd("rstd", DType::F32, N);
            h.input_backend().layernorm_forward(dt, x.data(), w.data(), bias ? b.data() : nullptr,
                                                y.data(), mean.as<float>(), rstd.as<float>(), N, C,
                                                eps);
            Buffer dy("dy", dt, N * C);
            g.normal(dy, 1.f);
            io.in = {dy, x, w, mean, rstd};
            io.out.emplace_back("dx", dt, N * C);
            io.out.emplace_back("dw", DType::F32, C);
            if (bias) io.out.emplace_back("db", DType::F32, C);
            for (auto& o : io.out) g.normal(o, 1.f);
            h.run(desc, io, [dt, N, C, bias](Backend& be, Io& x) {
              be.layernorm_backward(dt, x.i(0), x.i(1), x.i(2), x.it<float>(3), x.it<float>(4),
                                    x.o(0), x.ot<float>(1), bias ? x.ot<float>(2) : nullptr, N, C);
            });
          }
        }
      }
    }
  }
}

void check_rmsnorm(Harness& h) {
  if (!h.wants(Kernel::RmsNorm)) return;
  const float eps = 1e-6f;
  for (DType dt : activation_dtypes(h, Kernel::RmsNorm)) {
    const std::string dn(dtype_name(dt));
    for (Direction dir : {Direction::Forward, Direction::Backward}) {
      if (!h.row(Kernel::RmsNorm, "rmsnorm", dn, dir, 2e-5, {dt})) continue;
      for (int64_t N : h.pick<int64_t>({1, 3, 17, 64}, {512})) {
        for (int64_t C : h.either(N == 512, {1, 3, 7, 17, 33, 64, 100, 257}, {769})) {
          Gen g = h.gen();
          Io io;
          Buffer x("x", dt, N * C), w("w", dt, C);
          g.normal(x, 1.5f, 0.5f);
          g.normal(w, 0.2f, 1.f);
          std::string desc = dims({{"N", N}, {"C", C}});
          if (dir == Direction::Forward) {
            io.in = {x, w};
            io.out.emplace_back("y", dt, N * C);
            io.out.emplace_back("rstd", DType::F32, N);
            for (auto& o : io.out) g.normal(o, 1.f);
            h.run(desc, io, [dt, N, C, eps](Backend& be, Io& x) {
              be.rmsnorm_forward(dt, x.i(0), x.i(1), x.o(0), x.ot<float>(1), N, C, eps);
            });
          } else {
            Buffer y("y", dt, N * C), rstd("rstd", DType::F32, N);
            h.input_backend().rmsnorm_forward(dt, x.data(), w.data(), y.data(), rstd.as<float>(), N,
                                              C, eps);
            Buffer dy("dy", dt, N * C);
            g.normal(dy, 1.f);
            io.in = {dy, x, w, rstd};
            io.out.emplace_back("dx", dt, N * C);
            io.out.emplace_back("dw", DType::F32, C);
            for (auto& o : io.out) g.normal(o, 1.f);
            h.run(desc, io, [dt, N, C](Backend& be, Io& x) {
              be.rmsnorm_backward(dt, x.i(0), x.i(1), x.i(2), x.it<float>(3), x.o(0),
                                  x.ot<float>(1), N, C);
            });
          }
        }
      }
    }
  }
}

}  // namespace keel::backend::conformance
