// Conformance of the remaining families: cross-entropy, AdamW, reductions,
// sum of squares and casts (with NaN, Inf, subnormals and rounding ties).
#include <cmath>
#include <iterator>
#include <limits>

#include <fmt/format.h>

#include "backend/conformance/families.h"

namespace keel::backend::conformance {

void check_cross_entropy(Harness& h) {
  if (!h.wants(Kernel::CrossEntropy)) return;
  for (DType dt : activation_dtypes(h, Kernel::CrossEntropy)) {
    const std::string dn(dtype_name(dt));
    for (Direction dir : {Direction::Forward, Direction::Backward}) {
      if (!h.row(Kernel::CrossEntropy, "cross_entropy", dn, dir, 1e-4, {dt})) continue;
      for (int64_t N : h.pick<int64_t>({1, 3, 17}, {16})) {
        for (int64_t V : h.either(N == 16, {1, 7, 100, 257, 1000}, {50257})) {
          Gen g = h.gen();
          Buffer logits("logits", dt, N * V), targets("targets", DType::I32, N);
          g.normal(logits, 3.f);
          for (int64_t i = 0; i < N; ++i) targets.set(i, float(g.below(V)));
          if (N > 1) targets.set(1, -1.f);  // ignored row
          std::string desc = dims({{"N", N}, {"V", V}});
          Io io;
          if (dir == Direction::Forward) {
            io.in = {logits, targets};
            io.out.emplace_back("losses", DType::F32, N);
            io.out.emplace_back("lse", DType::F32, N);
            for (auto& o : io.out) g.normal(o, 1.f);
            h.run(desc, io, [dt, N, V](Backend& be, Io& x) {
              be.cross_entropy_forward(dt, x.i(0), x.it<int32_t>(1), x.ot<float>(0), x.ot<float>(1),
                                       N, V);
            });
          } else {
            Buffer losses("losses", DType::F32, N), lse("lse", DType::F32, N);
            h.input_backend().cross_entropy_forward(dt, logits.data(), targets.as<int32_t>(),
                                                    losses.as<float>(), lse.as<float>(), N, V);
            Buffer dloss("dloss", DType::F32, N);
            g.normal(dloss, 1.f);
            io.in = {logits, targets, lse, dloss};
            io.out.emplace_back("dlogits", dt, N * V);
            g.normal(io.out[0], 1.f);
            h.run(desc, io, [dt, N, V](Backend& be, Io& x) {
              be.cross_entropy_backward(dt, x.i(0), x.it<int32_t>(1), x.it<float>(2),
                                        x.it<float>(3), x.o(0), N, V);
            });
          }
        }
      }
    }
  }
}

void check_adamw(Harness& h) {
  if (!h.wants(Kernel::AdamW)) return;
  if (!h.row(Kernel::AdamW, "adamw", "f32", Direction::Forward, 2e-5, {DType::F32})) return;
  int variant = 0;
  for (int64_t n : h.pick<int64_t>({1, 3, 7, 17, 33, 64, 100, 257, 1000, 4099}, {(1 << 18) + 5})) {
    for (int64_t t : {1, 10, 1000}) {
      AdamWArgs a;
      a.n = n;
      a.t = t;
      a.lr = variant % 2 ? 3e-2f : 1e-3f;
      a.weight_decay = variant % 3 ? 0.1f : 0.f;
      a.grad_scale = variant % 2 ? 0.7f : 1.f;
      // Ranks stepping on their own share of the batch (2 and 3 ranks).
      a.variance_keep = variant % 5 == 1 ? 0.5f : variant % 5 == 3 ? 1.f / 3.f : 1.f;
      const bool bf16_copy = variant++ % 2 == 0;
      Gen g = h.gen();
      Io io;
      io.in.emplace_back("grad", DType::F32, n);
      g.normal(io.in[0], 1.f);
      io.out.emplace_back("param", DType::F32, n);
      io.out.emplace_back("m", DType::F32, n);
      io.out.emplace_back("v", DType::F32, n);
      g.normal(io.out[0], 1.f);
      g.normal(io.out[1], 0.1f);
      g.uniform(io.out[2], 0.f, 0.01f);
      if (bf16_copy) {
        io.out.emplace_back("param_bf16", DType::BF16, n);
        g.normal(io.out[3], 1.f);
      }
      std::string desc = fmt::format("{} t={} lr={} wd={} grad_scale={} variance_keep={}{}",
                                     dims({{"n", n}}), t, a.lr, a.weight_decay, a.grad_scale,
                                     a.variance_keep, bf16_copy ? " +bf16 copy" : "");
      h.run(desc, io, [a, bf16_copy](Backend& be, Io& x) {
        be.adamw_update(a, x.ot<float>(0), x.it<float>(0), x.ot<float>(1), x.ot<float>(2),
                        bf16_copy ? x.ot<uint16_t>(3) : nullptr);
      });
    }
  }
}

void check_reduce(Harness& h) {
  if (!h.wants(Kernel::Reduce)) return;
  static constexpr std::pair<ReduceOp, const char*> kOps[] = {{ReduceOp::Sum, "reduce.sum"},
                                                              {ReduceOp::Mean, "reduce.mean"},
                                                              {ReduceOp::Max, "reduce.max"}};
  for (DType dt : activation_dtypes(h, Kernel::Reduce)) {
    const std::string dn(dtype_name(dt));
    for (auto [op, name] : kOps) {
      for (Direction dir : {Direction::Forward, Direction::Backward}) {
        if (!h.row(Kernel::Reduce, name, dn, dir, 2e-5, {dt})) continue;
        int variant = 0;
        for (int64_t N : h.pick<int64_t>({1, 3, 17}, {129})) {
          for (int64_t C : h.either(N == 129, {1, 3, 7, 17, 33, 64, 100, 257}, {4099})) {
            Gen g = h.gen();
            Io io;
            io.in.emplace_back("x", dt, N * C);
            g.normal(io.in[0], 1.f);
            // Half the cases plant a tied maximum: backward must pick the first.
            const bool tie = variant++ % 2 == 1 && C > 1;
            if (tie)
              for (int64_t i = 0; i < N; ++i)
                io.in[0].set(i * C + C / 2, 9.f), io.in[0].set(i * C + C - 1, 9.f);
            if (dir == Direction::Forward) {
              io.out.emplace_back("y", DType::F32, N);
            } else {
              io.in.emplace_back("dy", DType::F32, N);
              g.normal(io.in[1], 1.f);
              io.out.emplace_back("dx", dt, N * C);
            }
            g.normal(io.out[0], 1.f);
            h.run(dims({{"N", N}, {"C", C}}) + (tie ? " tied-max" : ""), io,
                  [op, dt, dir, N, C](Backend& be, Io& x) {
                    if (dir == Direction::Forward)
                      be.reduce_forward(op, dt, x.i(0), x.ot<float>(0), N, C);
                    else
                      be.reduce_backward(op, dt, x.i(0), x.it<float>(1), x.o(0), N, C);
                  });
          }
        }
      }
    }
  }
}

void check_sum_squares(Harness& h) {
  if (!h.wants(Kernel::SumSquares)) return;
  for (DType dt : activation_dtypes(h, Kernel::SumSquares)) {
    // An f64 sum of f32 squares: any fixed chunking agrees to ~1e-12.
    if (!h.row(Kernel::SumSquares, "sum_squares", std::string(dtype_name(dt)), Direction::Forward,
               1e-9, {dt}))
      continue;
    for (int64_t n :
         h.pick<int64_t>({1, 3, 7, 17, 33, 64, 100, 257, 1000, 4099, 100003}, {(1 << 20) + 1})) {
      Gen g = h.gen();
      Io io;
      io.in.emplace_back("x", dt, n);
      g.normal(io.in[0], 3.f);
      io.out.emplace_back("sum", DType::F32, 1, /*f64=*/true);
      h.run(dims({{"n", n}}), io,
            [dt, n](Backend& be, Io& x) { be.sum_squares(dt, x.i(0), n, x.ot<double>(0)); });
    }
  }
}

void check_cast(Harness& h) {
  if (!h.wants(Kernel::Cast)) return;
  static constexpr DType kPairs[][2] = {{DType::F32, DType::BF16}, {DType::F32, DType::F16},
                                        {DType::BF16, DType::F32}, {DType::F16, DType::F32},
                                        {DType::BF16, DType::F16}, {DType::F16, DType::BF16}};
  // Values on both sides of every rounding decision and range limit of the
  // 16-bit types: ties to even, overflow to Inf, f16 subnormals, f32 subnormals.
  const float kSpecial[] = {std::numeric_limits<float>::quiet_NaN(),
                            INFINITY,
                            -INFINITY,
                            0.f,
                            -0.f,
                            65504.f,
                            65519.f,
                            65520.f,
                            -65520.f,
                            1.f + 0x1p-11f,
                            1.f + 0x3p-11f,
                            0x1p-24f,
                            0x1p-25f,
                            0x3p-25f,
                            -0x1p-26f,
                            6.1e-5f,
                            1.f + 0x1p-8f,
                            1.f + 0x3p-8f,
                            3.3961776e38f,
                            1e-40f,
                            -1e-45f,
                            std::numeric_limits<float>::max()};
  for (const auto& p : kPairs) {
    DType src = p[0], dst = p[1];
    std::string label = fmt::format("{}->{}", dtype_name(src), dtype_name(dst));
    DType need = src == DType::F32 ? dst : src;
    bool ok = dst == DType::F32 || src == DType::F32
                  ? h.row(Kernel::Cast, "cast", label, Direction::Forward, 0.0, {need})
                  : h.row(Kernel::Cast, "cast", label, Direction::Forward, 0.0, {src, dst});
    if (!ok) continue;
    for (int64_t n : h.pick<int64_t>({1, 7, 33, 64, 257, 1000, 4099}, {(1 << 18) + 7})) {
      Gen g = h.gen();
      Io io;
      io.in.emplace_back("src", src, n);
      // Normal values spread over 2^-30 .. 2^30 so every exponent range is hit.
      for (int64_t i = 0; i < n; ++i)
        io.in[0].set(i, std::ldexp(g.normal(), int(g.below(61)) - 30));
      for (int64_t i = 0; i < n && i < int64_t(std::size(kSpecial)); ++i)
        io.in[0].set(i, kSpecial[i]);
      io.out.emplace_back("dst", dst, n);
      g.normal(io.out[0], 1.f);
      h.run(dims({{"n", n}}), io,
            [src, dst, n](Backend& be, Io& x) { be.cast(src, x.i(0), dst, x.o(0), n); });
    }
  }
}

}  // namespace keel::backend::conformance
