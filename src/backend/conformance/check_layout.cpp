// Conformance of the layout families: strided row copies (plain and
// accumulating, with strides wider than the rows) and multi-head latent
// attention's q/k/v assembly, forward and accumulating backward (the key
// rope columns summed over heads).
#include <array>

#include <fmt/format.h>

#include "backend/conformance/families.h"

namespace keel::backend::conformance {

void check_copy_rows(Harness& h) {
  if (!h.wants(Kernel::CopyRows)) return;
  using Case = std::array<int64_t, 4>;  // (rows, cols, src_stride, dst_stride)
  const std::vector<Case> cases = h.pick<Case>(
      {{1, 1, 1, 1}, {3, 7, 7, 17}, {17, 5, 33, 5}, {33, 64, 100, 64}, {7, 100, 257, 101}},
      {{4096, 96, 512, 96}});
  for (DType dt : activation_dtypes(h, Kernel::CopyRows)) {
    const std::string dn(dtype_name(dt));
    for (int acc = 0; acc < 2; ++acc) {
      // The accumulating form is the slice's backward.
      if (!h.row(Kernel::CopyRows, acc ? "copy_rows +=" : "copy_rows", dn,
                 acc ? Direction::Backward : Direction::Forward, 1e-6, {dt}))
        continue;
      for (const Case& c : cases) {
        const int64_t rows = c[0], cols = c[1], ss = c[2], ds = c[3];
        Gen g = h.gen();
        Io io;
        io.in = {Buffer("src", dt, (rows - 1) * ss + cols)};
        g.normal(io.in[0], 1.f);
        io.out.emplace_back("dst", dt, (rows - 1) * ds + cols);
        g.normal(io.out[0], 1.f);  // untouched between rows, added to when accumulating
        h.run(dims({{"rows", rows}, {"cols", cols}, {"src_stride", ss}, {"dst_stride", ds}}), io,
              [=](Backend& be, Io& x) {
                be.copy_rows(dt, x.i(0), ss, x.o(0), ds, rows, cols, acc != 0);
              });
      }
    }
  }
}

void check_mla_qkv(Harness& h) {
  if (!h.wants(Kernel::MlaQkv)) return;
  using Case = std::array<int64_t, 5>;  // (N, NH, nope, rope, v)
  const std::vector<Case> cases = h.pick<Case>(
      {{1, 1, 1, 2, 1}, {3, 2, 4, 2, 6}, {17, 4, 8, 4, 8}, {33, 3, 16, 8, 5}, {7, 8, 32, 16, 32}},
      {{2048, 16, 64, 32, 64}});
  for (DType dt : activation_dtypes(h, Kernel::MlaQkv)) {
    const std::string dn(dtype_name(dt));
    for (Direction dir : {Direction::Forward, Direction::Backward}) {
      if (!h.row(Kernel::MlaQkv, "mla_qkv", dn, dir, 1e-6, {dt})) continue;
      for (const Case& c : cases) {
        MlaArgs a;
        a.N = c[0], a.NH = c[1], a.nope = c[2], a.rope = c[3], a.v = c[4], a.dt = dt;
        const int64_t D = a.D(), q = a.N * a.NH * D, kv = a.N * a.NH * (a.nope + a.v),
                      kpe = a.N * a.rope, qkv = a.N * 3 * a.NH * D;
        Gen g = h.gen();
        const std::string desc =
            dims({{"N", a.N}, {"NH", a.NH}, {"nope", a.nope}, {"rope", a.rope}, {"v", a.v}});
        Io io;
        if (dir == Direction::Forward) {
          io.in = {Buffer("q", dt, q), Buffer("kv", dt, kv), Buffer("kpe", dt, kpe)};
          for (auto& b : io.in) g.normal(b, 1.f);
          io.out.emplace_back("qkv", dt, qkv);
          g.normal(io.out[0], 1.f);  // every element is written, the padding with 0
          h.run(desc, io,
                [a](Backend& be, Io& x) { be.mla_qkv_forward(a, x.i(0), x.i(1), x.i(2), x.o(0)); });
        } else {
          io.in = {Buffer("g", dt, qkv), Buffer("g_rope", dt, qkv)};
          for (auto& b : io.in) g.normal(b, 1.f);
          io.out.emplace_back("dq", dt, q);
          io.out.emplace_back("dkv", dt, kv);
          io.out.emplace_back("dkpe", dt, kpe);
          for (auto& b : io.out) g.normal(b, 1.f);
          h.run(desc, io, [a](Backend& be, Io& x) {
            be.mla_qkv_backward(a, x.i(0), x.i(1), x.o(0), x.o(1), x.o(2));
          });
        }
      }
    }
  }
}

}  // namespace keel::backend::conformance
