// Conformance of the elementwise families: gelu, silu, swiglu, add /
// accumulate and bias_add, forward and accumulating backward, over lengths
// that leave every possible vector tail.
#include <cmath>
#include <iterator>

#include <fmt/format.h>

#include "backend/conformance/families.h"

namespace keel::backend::conformance {

namespace {

std::vector<int64_t> lengths(const Harness& h) {
  return h.pick<int64_t>({1, 3, 7, 17, 33, 64, 100, 257, 1000, 4099}, {(1 << 18) + 3});
}

// Normal inputs with large-magnitude values planted at the front, where
// tanh / exp saturate and a careless formula overflows into NaN.
void activation_input(Gen& g, Buffer& b) {
  g.normal(b, 2.f);
  static constexpr float kSpecial[] = {0.f, -30.f, 30.f, -10.f, 10.f, 88.f, -88.f, -3.f};
  for (int64_t i = 0; i < b.size() && i < int64_t(std::size(kSpecial)); ++i) b.set(i, kSpecial[i]);
}

// Elementwise unary activation: fwd(x) -> y; bwd(x, dy) -> dx (accumulated).
template <class Fwd, class Bwd>
void check_unary(Harness& h, Kernel k, Fwd fwd, Bwd bwd) {
  for (DType dt : activation_dtypes(h, k)) {
    const std::string dn(dtype_name(dt));
    for (Direction dir : {Direction::Forward, Direction::Backward}) {
      // exp / tanh: a vector polynomial may differ from libm by a few ulp.
      if (!h.row(k, std::string(kernel_name(k)), dn, dir, 1e-4, {dt})) continue;
      for (int64_t n : lengths(h)) {
        Gen g = h.gen();
        Io io;
        io.in.emplace_back("x", dt, n);
        activation_input(g, io.in[0]);
        if (dir == Direction::Backward) {
          io.in.emplace_back("dy", dt, n);
          g.normal(io.in[1], 1.f);
        }
        io.out.emplace_back(dir == Direction::Forward ? "y" : "dx", dt, n);
        g.normal(io.out[0], 1.f);
        h.run(dims({{"n", n}}), io, [=](Backend& be, Io& x) {
          if (dir == Direction::Forward)
            fwd(be, dt, x.i(0), x.o(0), n);
          else
            bwd(be, dt, x.i(0), x.i(1), x.o(0), n);
        });
      }
    }
  }
}

}  // namespace

void check_gelu(Harness& h) {
  if (!h.wants(Kernel::Gelu)) return;
  check_unary(
      h, Kernel::Gelu,
      [](Backend& be, DType dt, const void* x, void* y, int64_t n) {
        be.gelu_forward(dt, x, y, n);
      },
      [](Backend& be, DType dt, const void* x, const void* dy, void* dx, int64_t n) {
        be.gelu_backward(dt, x, dy, dx, n);
      });
}

void check_silu(Harness& h) {
  if (!h.wants(Kernel::Silu)) return;
  check_unary(
      h, Kernel::Silu,
      [](Backend& be, DType dt, const void* x, void* y, int64_t n) {
        be.silu_forward(dt, x, y, n);
      },
      [](Backend& be, DType dt, const void* x, const void* dy, void* dx, int64_t n) {
        be.silu_backward(dt, x, dy, dx, n);
      });
}

void check_swiglu(Harness& h) {
  if (!h.wants(Kernel::SwiGlu)) return;
  for (DType dt : activation_dtypes(h, Kernel::SwiGlu)) {
    const std::string dn(dtype_name(dt));
    for (Direction dir : {Direction::Forward, Direction::Backward}) {
      if (!h.row(Kernel::SwiGlu, "swiglu", dn, dir, 1e-4, {dt})) continue;
      for (int64_t n : lengths(h)) {
        Gen g = h.gen();
        Io io;
        io.in.emplace_back("gate", dt, n);
        io.in.emplace_back("up", dt, n);
        activation_input(g, io.in[0]);
        g.normal(io.in[1], 1.f);
        if (dir == Direction::Forward) {
          io.out.emplace_back("y", dt, n);
        } else {
          io.in.emplace_back("dy", dt, n);
          g.normal(io.in[2], 1.f);
          io.out.emplace_back("dgate", dt, n);
          io.out.emplace_back("dup", dt, n);
        }
        for (auto& o : io.out) g.normal(o, 1.f);
        h.run(dims({{"n", n}}), io, [dt, dir, n](Backend& be, Io& x) {
          if (dir == Direction::Forward)
            be.swiglu_forward(dt, x.i(0), x.i(1), x.o(0), n);
          else
            be.swiglu_backward(dt, x.i(0), x.i(1), x.i(2), x.o(0), x.o(1), n);
        });
      }
    }
  }
}

void check_add(Harness& h) {
  if (!h.wants(Kernel::Add)) return;
  for (DType dt : activation_dtypes(h, Kernel::Add)) {
    const std::string dn(dtype_name(dt));
    if (h.row(Kernel::Add, "add", dn, Direction::Forward, 2e-5, {dt})) {
      for (int64_t n : lengths(h)) {
        for (int alias = 0; alias < 3; ++alias) {  // y separate, y == a, y == b
          Gen g = h.gen();
          Buffer a("a", dt, n), b("b", dt, n);
          g.normal(a, 1.f);
          g.normal(b, 1.f);
          if (n >= 8) {  // inf + finite = inf, inf + -inf = NaN
            a.set(0, INFINITY), a.set(1, INFINITY), b.set(1, -INFINITY), b.set(2, -INFINITY);
          }
          Io io;
          if (alias == 0) {
            io.in = {a, b};
            io.out.emplace_back("y", dt, n);
            g.normal(io.out[0], 1.f);
          } else {
            io.in = {alias == 1 ? b : a};
            io.out = {alias == 1 ? a : b};
          }
          const char* what[] = {"", " y=a", " y=b"};
          h.run(dims({{"n", n}}) + what[alias], io, [dt, n, alias](Backend& be, Io& x) {
            if (alias == 0)
              be.add(dt, x.i(0), x.i(1), x.o(0), n);
            else if (alias == 1)
              be.add(dt, x.o(0), x.i(0), x.o(0), n);
            else
              be.add(dt, x.i(0), x.o(0), x.o(0), n);
          });
        }
      }
    }
    // The backward of add is accumulate: y += alpha * x.
    if (h.row(Kernel::Add, "accumulate", dn, Direction::Backward, 2e-5, {dt})) {
      for (int64_t n : lengths(h)) {
        for (float alpha : {1.f, 0.5f, -2.f}) {
          Gen g = h.gen();
          Io io;
          io.in.emplace_back("x", dt, n);
          io.out.emplace_back("y", dt, n);
          g.normal(io.in[0], 1.f);
          g.normal(io.out[0], 1.f);
          h.run(
              fmt::format("{} alpha={}", dims({{"n", n}}), alpha), io,
              [dt, n, alpha](Backend& be, Io& x) { be.accumulate(dt, x.i(0), x.o(0), n, alpha); });
        }
      }
    }
  }
}

void check_bias_add(Harness& h) {
  if (!h.wants(Kernel::BiasAdd)) return;
  for (DType dt : activation_dtypes(h, Kernel::BiasAdd)) {
    const std::string dn(dtype_name(dt));
    for (Direction dir : {Direction::Forward, Direction::Backward}) {
      if (!h.row(Kernel::BiasAdd, "bias_add", dn, dir, 2e-5, {dt})) continue;
      for (int64_t N : h.pick<int64_t>({1, 3, 17, 64}, {512})) {
        for (int64_t C : h.either(N == 512, {1, 3, 7, 17, 33, 64, 100, 257}, {1027})) {
          Gen g = h.gen();
          Io io;
          if (dir == Direction::Forward) {
            io.in.emplace_back("bias", dt, C);
            io.out.emplace_back("y", dt, N * C);
          } else {
            io.in.emplace_back("dy", dt, N * C);
            io.out.emplace_back("dbias", DType::F32, C);
          }
          g.normal(io.in[0], 1.f);
          g.normal(io.out[0], 1.f);
          h.run(dims({{"N", N}, {"C", C}}), io, [dt, dir, N, C](Backend& be, Io& x) {
            if (dir == Direction::Forward)
              be.bias_add(dt, x.o(0), x.i(0), N, C);
            else
              be.bias_backward(dt, x.i(0), x.ot<float>(0), N, C);
          });
        }
      }
    }
  }
}

}  // namespace keel::backend::conformance
