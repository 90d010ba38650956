// Conformance of the position-aware families: rope (strided rows, in place)
// and causal attention (grouped-query heads, packed qkv rows, decoding with
// Tq < Tk), forward and accumulating backward.
#include <array>
#include <cmath>

#include <fmt/format.h>

#include "backend/conformance/families.h"

namespace keel::backend::conformance {

void check_rope(Harness& h) {
  if (!h.wants(Kernel::Rope)) return;
  using Shape4 = std::array<int64_t, 4>;  // (B, T, NH, HS)
  const std::vector<Shape4> shapes = h.pick<Shape4>(
      {{1, 1, 1, 2}, {1, 7, 3, 8}, {2, 17, 2, 64}, {1, 3, 4, 34}, {2, 33, 1, 16}, {3, 5, 2, 100}},
      {{2, 257, 8, 64}});
  for (DType dt : activation_dtypes(h, Kernel::Rope)) {
    const std::string dn(dtype_name(dt));
    for (Direction dir : {Direction::Forward, Direction::Backward}) {
      // Angles reach pos * 1 rad; how sin/cos and theta^(-2i/HS) are
      // evaluated moves results by ~pos * 1e-7, hence the 1e-4 bound.
      if (!h.row(Kernel::Rope, "rope", dn, dir, 1e-4, {dt})) continue;
      int variant = 0;
      for (const auto& s : shapes) {
        for (int layout = 0; layout < 3; ++layout, ++variant) {
          // layout 0: contiguous; 1: rows inside a wider (qkv-like) row with
          // gaps between batches; 2: in place (forward) / contiguous (backward).
          RopeArgs a;
          a.B = s[0], a.T = s[1], a.NH = s[2], a.HS = s[3];
          a.row_stride = layout == 1 ? 3 * a.NH * a.HS : a.NH * a.HS;
          a.batch_stride = a.T * a.row_stride + (layout == 1 ? 4 : 0);
          a.pos0 = variant % 3 == 0 ? 0 : variant % 3 == 1 ? 7 : 100;
          a.theta = variant % 2 ? 500000.f : 10000.f;
          a.dt = dt;
          const int64_t n = (a.B - 1) * a.batch_stride + (a.T - 1) * a.row_stride + a.NH * a.HS;
          const bool in_place = layout == 2 && dir == Direction::Forward;
          Gen g = h.gen();
          Io io;
          io.in.emplace_back(dir == Direction::Forward ? "x" : "dy", dt, n);
          io.out.emplace_back(dir == Direction::Forward ? "y" : "dx", dt, n);
          g.normal(io.in[0], 1.f);
          g.normal(io.out[0], 1.f);
          if (in_place) io.out[0] = Buffer(io.in[0]), io.in.clear();
          std::string desc =
              fmt::format("{} row_stride={} batch_stride={} pos0={} theta={}{}",
                          dims({{"B", a.B}, {"T", a.T}, {"NH", a.NH}, {"HS", a.HS}}), a.row_stride,
                          a.batch_stride, a.pos0, a.theta, in_place ? " in-place" : "");
          h.run(desc, io, [a, dir, in_place](Backend& be, Io& x) {
            if (dir == Direction::Backward)
              be.rope_backward(a, x.i(0), x.o(0));
            else if (in_place)
              be.rope_forward(a, x.o(0), x.o(0));
            else
              be.rope_forward(a, x.i(0), x.o(0));
          });
        }
      }
    }
  }
}

namespace {

struct AttnCase {
  int64_t B, Tq, Tk, NH, NKV, HS;
  bool packed;  // q, k, v (and dq, dk, dv) interleaved in one (B, T, NH+2*NKV, HS) buffer
};

}  // namespace

void check_attention(Harness& h) {
  if (!h.wants(Kernel::Attention)) return;
  const std::vector<AttnCase> cases =
      h.pick<AttnCase>({{1, 1, 1, 1, 1, 1, false},
                        {2, 7, 7, 4, 2, 16, true},
                        {1, 17, 17, 3, 1, 33, false},
                        {1, 33, 33, 2, 2, 64, true},
                        {2, 3, 3, 6, 3, 8, false},
                        {1, 1, 17, 4, 1, 16, false},
                        {2, 5, 33, 2, 1, 7, false},
                        {1, 64, 64, 1, 1, 3, false},
                        {1, 100, 100, 2, 1, 17, true},
                        // Several query and key tiles, the last ones partial:
                        // grouped heads, odd head sizes, queries after past keys.
                        {1, 150, 150, 4, 2, 48, false},
                        {2, 40, 90, 4, 2, 20, false},
                        {1, 130, 200, 3, 1, 19, false}},
                       {{2, 257, 257, 8, 2, 64, true}, {1, 1, 1025, 8, 8, 64, false}});
  for (DType dt : activation_dtypes(h, Kernel::Attention)) {
    const std::string dn(dtype_name(dt));
    const int64_t es = int64_t(dtype_size(dt));
    for (Direction dir : {Direction::Forward, Direction::Backward}) {
      if (!h.row(Kernel::Attention, "attention", dn, dir, 1e-4, {dt})) continue;
      // The backward needs D = sum_j p_j dp_j per query row. It may be
      // computed from recomputed probabilities (ref) or as dout . o, with o
      // the saved, already rounded output (flash attention). In f32 the two
      // agree; with a 16-bit o they differ by o's rounding times |dout|, and
      // that reaches dk through every query: up to ~1e-2 of the rms, measured
      // over 25 seeds. Both are correct, so 16-bit gradients get 3x the
      // usual 16-bit tolerance; a dropped or doubled term is still far out.
      if (dir == Direction::Backward) h.widen_16bit_tolerance(3.0);
      for (const AttnCase& c : cases) {
        AttentionArgs a;
        a.B = c.B, a.Tq = c.Tq, a.Tk = c.Tk, a.NH = c.NH, a.NKV = c.NKV, a.HS = c.HS;
        a.scale = 1.f / std::sqrt(float(c.HS));
        a.dt = dt;
        // Element offsets of q, k, v inside their buffers, and which buffer.
        int64_t off[3] = {0, 0, 0};
        size_t buf[3] = {0, 1, 2};
        std::vector<Buffer> qkv;
        if (c.packed) {
          a.q_row_stride = a.kv_row_stride = (c.NH + 2 * c.NKV) * c.HS;
          a.q_batch_stride = a.kv_batch_stride = c.Tq * a.q_row_stride;
          off[1] = c.NH * c.HS, off[2] = (c.NH + c.NKV) * c.HS;
          buf[1] = buf[2] = 0;
          qkv.emplace_back("qkv", dt, c.B * a.q_batch_stride);
        } else {
          a.q_row_stride = c.NH * c.HS, a.q_batch_stride = c.Tq * a.q_row_stride;
          a.kv_row_stride = c.NKV * c.HS, a.kv_batch_stride = c.Tk * a.kv_row_stride;
          qkv.emplace_back("q", dt, c.B * a.q_batch_stride);
          qkv.emplace_back("k", dt, c.B * a.kv_batch_stride);
          qkv.emplace_back("v", dt, c.B * a.kv_batch_stride);
        }
        Gen g = h.gen();
        for (auto& b : qkv) g.normal(b, 1.f);
        std::string desc = fmt::format("{}{}",
                                       dims({{"B", c.B},
                                             {"Tq", c.Tq},
                                             {"Tk", c.Tk},
                                             {"NH", c.NH},
                                             {"NKV", c.NKV},
                                             {"HS", c.HS}}),
                                       c.packed ? " packed-qkv" : "");
        // Address of q (j=0), k (1) or v (2) -- or their gradients -- given
        // the address of the buffer that holds it (host or device memory).
        auto ptr = [es, off](const void* base, int j) {
          return static_cast<char*>(const_cast<void*>(base)) + off[j] * es;
        };
        const int64_t no = c.B * c.Tq * c.NH * c.HS, nl = c.B * c.NH * c.Tq;
        if (dir == Direction::Forward) {
          Io io;
          io.in = qkv;
          io.out.emplace_back("o", dt, no);
          io.out.emplace_back("lse", DType::F32, nl);
          for (auto& o : io.out) g.normal(o, 1.f);
          h.run(desc, io, [a, ptr, buf](Backend& be, Io& x) {
            be.attention_forward(a, ptr(x.i(buf[0]), 0), ptr(x.i(buf[1]), 1), ptr(x.i(buf[2]), 2),
                                 x.o(0), x.ot<float>(1));
          });
        } else {
          Buffer o("o", dt, no), lse("lse", DType::F32, nl), dout("dout", dt, no);
          h.input_backend().attention_forward(
              a, ptr(qkv[buf[0]].data(), 0), ptr(qkv[buf[1]].data(), 1), ptr(qkv[buf[2]].data(), 2),
              o.data(), lse.as<float>());
          g.normal(dout, 1.f);
          Io io;
          io.in = qkv;
          const size_t nq = qkv.size();
          io.in.push_back(dout);
          io.in.push_back(o);
          io.in.push_back(lse);
          for (const Buffer& b : qkv) io.out.emplace_back("d" + b.name(), dt, b.size());
          for (auto& b : io.out) g.normal(b, 1.f);
          h.run(desc, io, [a, ptr, buf, nq](Backend& be, Io& x) {
            be.attention_backward(a, x.i(nq), ptr(x.i(buf[0]), 0), ptr(x.i(buf[1]), 1),
                                  ptr(x.i(buf[2]), 2), x.i(nq + 1), x.it<float>(nq + 2),
                                  ptr(x.o(buf[0]), 0), ptr(x.o(buf[1]), 1), ptr(x.o(buf[2]), 2));
          });
        }
      }
    }
  }
}

}  // namespace keel::backend::conformance
