// Conformance of the mixture-of-experts families: routing (sigmoid and
// softmax gating, with and without a selection bias and top-k normalisation,
// including exact ties that must go to the smaller expert id), token
// permutation to expert order and back (with dropped slots), and grouped
// expert matmuls (empty groups included), forward and accumulating backward.
#include <algorithm>
#include <array>
#include <memory>
#include <numeric>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "backend/conformance/families.h"

namespace keel::backend::conformance {

namespace {

// A random routing of N tokens to K of E experts: pos (N, K) rows grouped by
// expert in token order, with every `drop`-th slot dropped (-1) when drop > 0.
// Returns the number of permuted rows.
int64_t random_positions(Gen& g, int64_t N, int64_t K, int64_t E, int64_t drop, Buffer& pos) {
  std::vector<int32_t> idx(size_t(N * K));
  for (int64_t n = 0; n < N; ++n) {
    std::vector<int32_t> e(static_cast<size_t>(E));
    std::iota(e.begin(), e.end(), 0);
    for (int64_t k = 0; k < K; ++k) {  // partial Fisher-Yates: K distinct experts
      const int64_t j = k + g.below(E - k);
      std::swap(e[size_t(k)], e[size_t(j)]);
      idx[size_t(n * K + k)] = e[size_t(k)];
    }
  }
  int64_t rows = 0;
  int64_t slot = 0;
  for (int64_t e = 0; e < E; ++e)
    for (int64_t i = 0; i < N * K; ++i)
      if (idx[size_t(i)] == e) {
        const bool dropped = drop > 0 && ++slot % drop == 0;
        pos.set(i, dropped ? -1.f : float(rows));
        rows += dropped ? 0 : 1;
      }
  return rows;
}

// Routing statistics and the sequence-level balance loss, on routings the
// oracle made (with a selection bias, so idx and plain_idx differ) and a
// plan with dropped slots. Rows of the MoeRoute family.
void check_moe_route_statistics(Harness& h) {
  using Case = std::array<int64_t, 4>;  // (B, T, E, K)
  const std::vector<Case> cases =
      h.pick<Case>({{1, 1, 1, 1}, {2, 3, 4, 2}, {3, 17, 8, 2}, {2, 33, 16, 4}, {1, 7, 64, 6}},
                   {{8, 256, 64, 8}});
  for (int which = 0; which < 2; ++which) {
    if (!h.row(Kernel::MoeRoute, which == 0 ? "moe_route_stats" : "moe_aux_loss", "f32",
               Direction::Forward, 1e-5, {DType::F32}))
      continue;
    for (const Case& c : cases) {
      MoeRouteArgs a;
      const int64_t B = c[0], T = c[1];
      a.N = B * T, a.E = c[2], a.K = c[3];
      a.gating = which == 0 ? MoeGating::Softmax : MoeGating::Sigmoid;
      Gen g = h.gen();
      Buffer logits("logits", DType::F32, a.N * a.E), bias("bias", DType::F32, a.E);
      g.normal(logits, 2.f);
      g.normal(bias, 0.5f);
      Buffer scores("scores", DType::F32, a.N * a.E), idx("idx", DType::I32, a.N * a.K),
          plain("plain_idx", DType::I32, a.N * a.K), w("w", DType::F32, a.N * a.K),
          pos("pos", DType::I32, a.N * a.K), offs("offsets", DType::I32, 2 * (a.E + 1));
      Backend& in = h.input_backend();
      in.moe_route_forward(a, logits.as<float>(), bias.as<float>(), scores.as<float>(),
                           idx.as<int32_t>(), w.as<float>());
      in.moe_route_forward(a, logits.as<float>(), nullptr, scores.as<float>(), plain.as<int32_t>(),
                           w.as<float>());
      const int64_t capacity = std::max<int64_t>(1, a.N * a.K / (2 * a.E));
      in.moe_plan(idx.as<int32_t>(), a.N, a.K, a.E, capacity, pos.as<int32_t>(),
                  offs.as<int64_t>());
      const std::string desc = dims({{"B", B}, {"T", T}, {"E", a.E}, {"K", a.K}});
      Io io;
      if (which == 0) {
        io.in = {scores, idx, plain, pos};
        io.out.emplace_back("load", DType::F32, 4 * a.E);
        io.out.emplace_back("stats", DType::F32, 2, /*f64=*/true);
        g.uniform(io.out[0], 0.f, 9.f);  // accumulated into
        g.uniform(io.out[1], 0.f, 9.f);
        h.run(desc + fmt::format(" capacity={}", capacity), io, [a](Backend& be, Io& x) {
          be.moe_route_stats(a, x.it<float>(0), x.it<int32_t>(1), x.it<int32_t>(2),
                             x.it<int32_t>(3), x.ot<float>(0), x.ot<double>(1));
        });
      } else {
        io.in = {scores, idx};
        io.out.emplace_back("dscores", DType::F32, a.N * a.E);
        io.out.emplace_back("loss", DType::F32, 1, /*f64=*/true);
        g.normal(io.out[0], 1.f);  // written over
        g.uniform(io.out[1], 0.f, 1.f);
        h.run(desc, io, [a, T](Backend& be, Io& x) {
          be.moe_aux_loss(a, T, 0.01f, 0.5f, x.it<float>(0), x.it<int32_t>(1), x.ot<float>(0),
                          x.ot<double>(1));
        });
      }
    }
  }
}

}  // namespace

void check_moe_plan(Harness& h);

void check_moe_route(Harness& h) {
  if (!h.wants(Kernel::MoeRoute)) return;
  using Case = std::array<int64_t, 3>;  // (N, E, K)
  const std::vector<Case> cases = h.pick<Case>(
      {{1, 1, 1}, {3, 4, 2}, {17, 8, 2}, {33, 16, 4}, {7, 64, 6}, {5, 7, 7}}, {{4096, 64, 8}});
  for (Direction dir : {Direction::Forward, Direction::Backward}) {
    if (!h.row(Kernel::MoeRoute, "moe_route", "f32", dir, 1e-5, {DType::F32})) continue;
    int variant = 0;
    for (const Case& c : cases) {
      for (int v = 0; v < 4; ++v, ++variant) {
        MoeRouteArgs a;
        a.N = c[0], a.E = c[1], a.K = c[2];
        a.gating = v % 2 ? MoeGating::Sigmoid : MoeGating::Softmax;
        a.norm_topk = v < 2;
        a.scale = v == 3 ? 2.5f : 1.f;
        const bool with_bias = variant % 3 != 0;
        if (variant % 5 == 2) a.noise = 0.2f, a.noise_seed = uint64_t(variant) + 1;  // jitter
        Gen g = h.gen();
        Buffer logits("logits", DType::F32, a.N * a.E), bias("bias", DType::F32, a.E);
        g.normal(logits, 2.f);
        // Row 0 has every logit equal: an exact tie that must pick experts 0..K-1.
        for (int64_t e = 0; e < a.E; ++e) logits.set(e, 0.5f);
        if (with_bias) g.normal(bias, 0.05f);
        if (with_bias && a.N > 1) {  // row 1: biased keys tie exactly on experts 2, 3
          for (int64_t e = 0; e < a.E; ++e) logits.set(a.E + e, -3.f);
          if (a.E > 3) {
            logits.set(a.E + 2, 1.f), logits.set(a.E + 3, 1.f);
            bias.set(2, 0.f), bias.set(3, 0.f);
          }
        }
        const std::string desc = fmt::format("{} {} norm_topk={} scale={} bias={} noise={}",
                                             dims({{"N", a.N}, {"E", a.E}, {"K", a.K}}),
                                             a.gating == MoeGating::Sigmoid ? "sigmoid" : "softmax",
                                             a.norm_topk, a.scale, with_bias, a.noise);
        if (dir == Direction::Forward) {
          Io io;
          io.in = {logits, bias};
          io.out.emplace_back("scores", DType::F32, a.N * a.E);
          io.out.emplace_back("idx", DType::I32, a.N * a.K);
          io.out.emplace_back("w", DType::F32, a.N * a.K);
          g.normal(io.out[0], 1.f);
          g.normal(io.out[2], 1.f);
          h.run(desc, io, [a, with_bias](Backend& be, Io& x) {
            be.moe_route_forward(a, x.it<float>(0), with_bias ? x.it<float>(1) : nullptr,
                                 x.ot<float>(0), x.ot<int32_t>(1), x.ot<float>(2));
          });
        } else {
          Buffer scores("scores", DType::F32, a.N * a.E), idx("idx", DType::I32, a.N * a.K),
              w("w", DType::F32, a.N * a.K), dw("dw", DType::F32, a.N * a.K),
              dscores("dscores", DType::F32, a.N * a.E);
          h.input_backend().moe_route_forward(a, logits.as<float>(),
                                              with_bias ? bias.as<float>() : nullptr,
                                              scores.as<float>(), idx.as<int32_t>(), w.as<float>());
          g.normal(dw, 1.f);
          g.normal(dscores, 0.3f);
          const bool aux = variant % 2 == 0;
          Io io;
          io.in = {scores, idx, dw, dscores};
          io.out.emplace_back("dlogits", DType::F32, a.N * a.E);
          g.normal(io.out[0], 1.f);
          h.run(desc + (aux ? " +dscores" : ""), io, [a, aux](Backend& be, Io& x) {
            be.moe_route_backward(a, x.it<float>(0), x.it<int32_t>(1), x.it<float>(2),
                                  aux ? x.it<float>(3) : nullptr, x.ot<float>(0));
          });
        }
      }
    }
  }
  check_moe_route_statistics(h);
}

void check_moe_permute(Harness& h) {
  if (!h.wants(Kernel::MoePermute)) return;
  check_moe_plan(h);
  using Case = std::array<int64_t, 5>;  // (N, K, E, C, drop)
  const std::vector<Case> cases = h.pick<Case>(
      {{1, 1, 1, 1, 0}, {3, 2, 4, 7, 0}, {17, 2, 8, 33, 3}, {33, 4, 16, 64, 0}, {7, 6, 64, 100, 5}},
      {{2048, 8, 64, 257, 7}});
  for (DType dt : activation_dtypes(h, Kernel::MoePermute)) {
    const std::string dn(dtype_name(dt));
    for (int which = 0; which < 2; ++which) {  // permute, unpermute
      const std::string name = which == 0 ? "moe_permute" : "moe_unpermute";
      for (Direction dir : {Direction::Forward, Direction::Backward}) {
        if (!h.row(Kernel::MoePermute, name, dn, dir, 1e-5, {dt})) continue;
        for (const Case& c : cases) {
          const int64_t N = c[0], K = c[1], E = c[2], C = c[3];
          Gen g = h.gen();
          Buffer pos("pos", DType::I32, N * K);
          const int64_t R = std::max<int64_t>(random_positions(g, N, K, E, c[4], pos), 1);
          const std::string desc =
              dims({{"N", N}, {"K", K}, {"E", E}, {"C", C}, {"drop_every", c[4]}});
          Buffer w("w", DType::F32, N * K);
          g.uniform(w, 0.f, 1.f);
          Io io;
          if (which == 0 && dir == Direction::Forward) {
            io.in = {pos, Buffer("x", dt, N * C)};
            g.normal(io.in[1], 1.f);
            io.out.emplace_back("xp", dt, R * C);
            g.normal(io.out[0], 1.f);
            h.run(desc, io, [dt, N, K, C](Backend& be, Io& x) {
              be.moe_permute_forward(dt, x.it<int32_t>(0), x.i(1), x.o(0), N, K, C);
            });
          } else if (which == 0) {
            io.in = {pos, Buffer("dxp", dt, R * C)};
            g.normal(io.in[1], 1.f);
            io.out.emplace_back("dx", dt, N * C);
            g.normal(io.out[0], 1.f);
            h.run(desc, io, [dt, N, K, C](Backend& be, Io& x) {
              be.moe_permute_backward(dt, x.it<int32_t>(0), x.i(1), x.o(0), N, K, C);
            });
          } else if (dir == Direction::Forward) {
            io.in = {pos, w, Buffer("yp", dt, R * C)};
            g.normal(io.in[2], 1.f);
            io.out.emplace_back("y", dt, N * C);
            g.normal(io.out[0], 1.f);
            h.run(desc, io, [dt, N, K, C](Backend& be, Io& x) {
              be.moe_unpermute_forward(dt, x.it<int32_t>(0), x.it<float>(1), x.i(2), x.o(0), N, K,
                                       C);
            });
          } else {
            io.in = {pos, w, Buffer("yp", dt, R * C), Buffer("dy", dt, N * C)};
            g.normal(io.in[2], 1.f);
            g.normal(io.in[3], 1.f);
            io.out.emplace_back("dyp", dt, R * C);
            io.out.emplace_back("dw", DType::F32, N * K);
            for (auto& b : io.out) g.normal(b, 1.f);
            h.run(desc, io, [dt, N, K, C](Backend& be, Io& x) {
              be.moe_unpermute_backward(dt, x.it<int32_t>(0), x.it<float>(1), x.i(2), x.i(3),
                                        x.o(0), x.ot<float>(1), N, K, C);
            });
          }
        }
      }
    }
  }
}

// The dispatch plan of random routings, with and without a capacity (one
// that drops slots): pos and offsets are exact integers.
void check_moe_plan(Harness& h) {
  using Case = std::array<int64_t, 4>;  // (N, K, E, capacity)
  const std::vector<Case> cases = h.pick<Case>(
      {{1, 1, 1, 0}, {3, 2, 4, 0}, {17, 2, 8, 3}, {33, 4, 16, 0}, {7, 6, 64, 1}, {0, 2, 4, 0}},
      {{4096, 8, 64, 600}});
  if (!h.row(Kernel::MoePermute, "moe_plan", "i32", Direction::Forward, 0, {DType::F32})) return;
  for (const Case& c : cases) {
    const int64_t N = c[0], K = c[1], E = c[2], cap = c[3];
    Gen g = h.gen();
    Buffer idx("idx", DType::I32, std::max<int64_t>(N * K, 1));
    for (int64_t i = 0; i < N * K; ++i) idx.set(i, float(g.below(E)));
    Io io;
    io.in = {idx};
    io.out.emplace_back("pos", DType::I32, std::max<int64_t>(N * K, 1));
    io.out.emplace_back("offsets", DType::I32, 2 * (E + 1));
    if (N * K == 0)
      io.out[0].set(0, 5.f);  // nothing to plan: left alone
    else
      for (int64_t i = 0; i < N * K; ++i) io.out[0].set(i, float(g.below(1000)));
    for (int64_t i = 0; i < 2 * (E + 1); ++i) io.out[1].set(i, float(g.below(1000)));
    h.run(dims({{"N", N}, {"K", K}, {"E", E}, {"capacity", cap}}), io, [=](Backend& be, Io& x) {
      be.moe_plan(x.it<int32_t>(0), N, K, E, cap, x.ot<int32_t>(0), x.ot<int64_t>(1));
    });
  }
}

void check_grouped_matmul(Harness& h) {
  if (!h.wants(Kernel::GroupedMatmul)) return;
  // (rows per group..., N, K): a 0 is an expert that received no tokens.
  struct Case {
    std::vector<int64_t> rows;
    int64_t N, K;
  };
  std::vector<Case> cases = {{{1}, 1, 1},        {{3, 0, 5}, 7, 17},     {{0, 17, 2, 9}, 33, 8},
                             {{16, 16}, 64, 33}, {{5, 0, 0, 1}, 3, 100}, {{33, 1, 7}, 100, 64}};
  if (h.large()) cases.push_back({{700, 300, 0, 1024}, 256, 128});
  for (DType dt : activation_dtypes(h, Kernel::GroupedMatmul)) {
    const std::string dn(dtype_name(dt));
    for (Direction dir : {Direction::Forward, Direction::Backward}) {
      if (!h.row(Kernel::GroupedMatmul, "grouped_matmul", dn, dir, 1e-5, {dt})) continue;
      for (const Case& c : cases) {
        auto offs = std::make_shared<std::vector<int64_t>>(1, 0);
        for (int64_t r : c.rows) offs->push_back(offs->back() + r);
        GroupedMatmulArgs a;
        a.G = int64_t(c.rows.size());
        a.N = c.N;
        a.K = c.K;
        a.dt = dt;
        const int64_t R = std::max<int64_t>(offs->back(), 1);
        std::string desc = fmt::format("groups=[{}] N={} K={}", fmt::join(c.rows, ","), c.N, c.K);
        Gen g = h.gen();
        Buffer x("x", dt, R * a.K), w("w", dt, a.G * a.N * a.K);
        g.normal(x, 1.f);
        g.normal(w, 0.3f);
        // The offsets are kernel memory too (int64, as little-endian word pairs).
        Buffer ob("offsets", DType::I32, 2 * (a.G + 1));
        for (size_t i = 0; i < offs->size(); ++i) ob.set(int64_t(2 * i), float((*offs)[i]));
        Io io;
        if (dir == Direction::Forward) {
          io.in = {x, w, ob};
          io.out.emplace_back("y", dt, R * a.N);
          g.normal(io.out[0], 1.f);
          h.run(desc, io, [a](Backend& be, Io& v) {
            GroupedMatmulArgs b = a;
            b.offsets = v.it<int64_t>(2);
            be.grouped_matmul_forward(b, v.i(0), v.i(1), v.o(0));
          });
        } else {
          io.in = {x, w, Buffer("dy", dt, R * a.N), ob};
          g.normal(io.in[2], 1.f);
          io.out.emplace_back("dx", dt, R * a.K);
          io.out.emplace_back("dw", DType::F32, a.G * a.N * a.K);
          for (auto& b : io.out) g.normal(b, 1.f);
          h.run(desc, io, [a](Backend& be, Io& v) {
            GroupedMatmulArgs b = a;
            b.offsets = v.it<int64_t>(3);
            be.grouped_matmul_backward(b, v.i(2), v.i(0), v.i(1), v.o(0), v.ot<float>(1));
          });
        }
      }
    }
  }
}

}  // namespace keel::backend::conformance
