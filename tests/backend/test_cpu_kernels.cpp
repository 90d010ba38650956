// The cpu backend's non-GEMM kernels against the ref backend (f64 oracle):
// every kernel forward and backward, f32 and bf16 (f16 where supported), odd
// sizes that exercise vector tails, at every vector level this CPU runs; plus
// bit-identical results across thread counts and across repeated runs.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/cpu_backend.h"
#include "backend/cpu/cpu_kernels.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/rng.h"
// The kernels' traits at the one-lane level, for checking their exp2 polynomial
// directly (the vector levels are the same operations on more lanes).
#define KEEL_CPU_ISA exp_check
#include "backend/cpu/simd.h"

namespace {

using keel::DType;
using keel::backend::AdamWArgs;
using keel::backend::AttentionArgs;
using keel::backend::Backend;
using keel::backend::ReduceOp;
using keel::backend::RopeArgs;
namespace cpu = keel::backend::cpu;

// A typed host buffer: bytes plus the dtype they hold.
struct Buf {
  DType dt = DType::F32;
  std::vector<unsigned char> bytes;
  Buf() = default;
  Buf(DType d, int64_t n) : dt(d), bytes(size_t(n) * keel::dtype_size(d)) {}
  int64_t n() const { return int64_t(bytes.size() / keel::dtype_size(dt)); }
  void* p() { return bytes.data(); }
  const void* p() const { return bytes.data(); }
  float* f() { return reinterpret_cast<float*>(bytes.data()); }
  float get(int64_t i) const {
    uint16_t h;
    switch (dt) {
      case DType::F32: {
        float v;
        std::memcpy(&v, bytes.data() + 4 * i, 4);
        return v;
      }
      case DType::BF16:
        std::memcpy(&h, bytes.data() + 2 * i, 2);
        return keel::bf16_to_f32(h);
      case DType::F16:
        std::memcpy(&h, bytes.data() + 2 * i, 2);
        return keel::f16_to_f32(h);
      default:
        return 0.f;
    }
  }
  void set(int64_t i, float v) {
    uint16_t h;
    switch (dt) {
      case DType::F32:
        std::memcpy(bytes.data() + 4 * i, &v, 4);
        break;
      case DType::BF16:
        h = keel::f32_to_bf16(v);
        std::memcpy(bytes.data() + 2 * i, &h, 2);
        break;
      case DType::F16:
        h = keel::f32_to_f16(v);
        std::memcpy(bytes.data() + 2 * i, &h, 2);
        break;
      default:
        break;
    }
  }
};

// Uniform values in [lo, hi), a pure function of seed (same on every backend).
Buf rand_buf(DType dt, int64_t n, uint64_t seed, float lo = -1.f, float hi = 1.f) {
  Buf b(dt, n);
  std::vector<float> v(size_t(n > 0 ? n : 1));
  keel::Rng(seed, 17).fill_uniform(v.data(), n, lo, hi);
  for (int64_t i = 0; i < n; ++i) b.set(i, v[size_t(i)]);
  return b;
}

struct Out {
  std::string name;
  Buf buf;
};
using Outs = std::vector<Out>;

struct Tol {
  double rtol, atol;  // |got - want| <= rtol |want| + atol max|want|
};
Tol tol_for(DType dt) {
  if (dt == DType::F32) return {2e-4, 2e-5};
  return {2e-2, 8e-3};  // 16-bit outputs: a couple of ulps, rounding differs from f64
}

void expect_close(const Outs& got, const Outs& want, Tol tol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t k = 0; k < got.size(); ++k) {
    const Buf& g = got[k].buf;
    const Buf& w = want[k].buf;
    ASSERT_EQ(g.n(), w.n()) << what << " " << got[k].name;
    double scale = 0;
    for (int64_t i = 0; i < w.n(); ++i) scale = std::max(scale, std::fabs(double(w.get(i))));
    int bad = 0;
    for (int64_t i = 0; i < w.n(); ++i) {
      double a = g.get(i), b = w.get(i);
      if (std::isnan(b) && std::isnan(a)) continue;
      if (std::isinf(b) && a == b) continue;
      if (!(std::fabs(a - b) <= tol.rtol * std::fabs(b) + tol.atol * scale)) {
        if (++bad <= 5)
          ADD_FAILURE() << what << " output " << got[k].name << "[" << i << "]: cpu " << a
                        << " ref " << b << " (scale " << scale << ")";
      }
    }
    EXPECT_EQ(bad, 0) << what << " output " << got[k].name << ": " << bad << " of " << w.n()
                      << " elements out of tolerance";
  }
}

void expect_identical(const Outs& a, const Outs& b, const std::string& what) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t k = 0; k < a.size(); ++k)
    EXPECT_TRUE(a[k].buf.bytes == b[k].buf.bytes)
        << what << ": output " << a[k].name << " differs bit-wise";
}

std::vector<std::string> levels_here() {
  std::vector<std::string> out;
  for (auto l : {cpu::Level::Scalar, cpu::Level::Avx2, cpu::Level::Avx512})
    if (cpu::level_available(l)) out.emplace_back(cpu::level_name(l));
  return out;
}

// Runs `run` on ref and on cpu at every level (threads 1, 2, and 2 again):
// cpu must match ref within tol and be bit-identical across the cpu runs.
void check(const std::string& what, Tol tol, const std::function<Outs(Backend&)>& run) {
  auto ref = keel::backend::make_backend("ref");
  Outs want = run(*ref);
  for (const std::string& level : levels_here()) {
    auto be = keel::backend::make_cpu_backend(level);
    std::string tag = what + " @" + level;
    be->set_threads(1);
    Outs one = run(*be);
    expect_close(one, want, tol, tag);
    be->set_threads(2);
    Outs two = run(*be);
    expect_identical(one, two, tag + " threads 1 vs 2");
    be->set_threads(2);
    expect_identical(two, run(*be), tag + " repeated run");
  }
}

const std::vector<int64_t> kSizes = {1, 7, 33, 100, 769, 40000};
const std::vector<DType> kDtypes = {DType::F32, DType::BF16};

std::string name_of(const std::string& k, DType dt, int64_t n) {
  return k + " " + std::string(keel::dtype_name(dt)) + " n=" + std::to_string(n);
}

TEST(CpuKernels, LevelsAndDescribe) {
  auto be = keel::backend::make_cpu_backend();
  EXPECT_EQ(be->name(), "cpu");
  EXPECT_NE(be->describe().find("vector level"), std::string::npos) << be->describe();
  EXPECT_GE(be->threads(), 1);
  be->set_threads(2);
  EXPECT_EQ(be->threads(), 2);
  EXPECT_THROW(keel::backend::make_cpu_backend("avx9000"), keel::Error);
  // The environment cap is honoured.
  setenv("KEEL_CPU_LEVEL", "scalar", 1);
  EXPECT_EQ(cpu::detect_level(), cpu::Level::Scalar);
  setenv("KEEL_CPU_LEVEL", "bogus", 1);
  EXPECT_THROW(cpu::detect_level(), keel::Error);
  unsetenv("KEEL_CPU_LEVEL");
  EXPECT_TRUE(cpu::level_available(cpu::detect_level()));
}

TEST(CpuKernels, Activations) {
  for (DType dt : {DType::F32, DType::BF16, DType::F16})
    for (int64_t n : kSizes) {
      Tol tol = tol_for(dt);
      check(name_of("gelu", dt, n), tol, [&](Backend& be) {
        Buf x = rand_buf(dt, n, 1, -6, 6), dy = rand_buf(dt, n, 2), y(dt, n);
        Buf dx = rand_buf(dt, n, 3);
        be.gelu_forward(dt, x.p(), y.p(), n);
        be.gelu_backward(dt, x.p(), dy.p(), dx.p(), n);
        return Outs{{"y", y}, {"dx", dx}};
      });
      check(name_of("silu", dt, n), tol, [&](Backend& be) {
        Buf x = rand_buf(dt, n, 4, -10, 10), dy = rand_buf(dt, n, 5), y(dt, n);
        Buf dx = rand_buf(dt, n, 6);
        be.silu_forward(dt, x.p(), y.p(), n);
        be.silu_backward(dt, x.p(), dy.p(), dx.p(), n);
        return Outs{{"y", y}, {"dx", dx}};
      });
      check(name_of("swiglu", dt, n), tol, [&](Backend& be) {
        Buf g = rand_buf(dt, n, 7, -8, 8), u = rand_buf(dt, n, 8, -2, 2), dy = rand_buf(dt, n, 9);
        Buf y(dt, n), dg = rand_buf(dt, n, 10), du = rand_buf(dt, n, 11);
        be.swiglu_forward(dt, g.p(), u.p(), y.p(), n);
        be.swiglu_backward(dt, g.p(), u.p(), dy.p(), dg.p(), du.p(), n);
        return Outs{{"y", y}, {"dgate", dg}, {"dup", du}};
      });
      check(name_of("add/accumulate", dt, n), tol, [&](Backend& be) {
        Buf a = rand_buf(dt, n, 12), b = rand_buf(dt, n, 13), y(dt, n);
        Buf acc = rand_buf(dt, n, 14);
        be.add(dt, a.p(), b.p(), y.p(), n);
        be.accumulate(dt, a.p(), acc.p(), n, -0.75f);
        return Outs{{"y", y}, {"acc", acc}};
      });
    }
}

TEST(CpuKernels, BiasAddAndBackward) {
  for (DType dt : kDtypes)
    for (auto [N, C] :
         std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {7, 33}, {100, 7}, {3, 769}, {2200, 9}}) {
      check(name_of("bias", dt, N * C) + " C=" + std::to_string(C), tol_for(dt), [&](Backend& be) {
        Buf y = rand_buf(dt, N * C, 20), bias = rand_buf(dt, C, 21);
        Buf dy = rand_buf(dt, N * C, 22), db = rand_buf(DType::F32, C, 23);
        be.bias_add(dt, y.p(), bias.p(), N, C);
        be.bias_backward(dt, dy.p(), db.f(), N, C);
        return Outs{{"y", y}, {"dbias", db}};
      });
    }
}

const std::vector<std::pair<int64_t, int64_t>> kNormShapes = {{1, 1},   {7, 7},   {3, 33},
                                                              {5, 100}, {4, 769}, {2200, 33}};

TEST(CpuKernels, LayerNorm) {
  for (DType dt : kDtypes)
    for (auto [N, C] : kNormShapes)
      for (bool bias : {true, false}) {
        std::string what =
            name_of(bias ? "layernorm" : "layernorm nobias", dt, N * C) + " C=" + std::to_string(C);
        check(what, tol_for(dt), [&](Backend& be) {
          Buf x = rand_buf(dt, N * C, 30, -3, 2), w = rand_buf(dt, C, 31, 0.5, 1.5);
          Buf b = rand_buf(dt, C, 32), y(dt, N * C), mean(DType::F32, N), rstd(DType::F32, N);
          be.layernorm_forward(dt, x.p(), w.p(), bias ? b.p() : nullptr, y.p(), mean.f(), rstd.f(),
                               N, C, 1e-5f);
          Buf dy = rand_buf(dt, N * C, 33), dx = rand_buf(dt, N * C, 34);
          Buf dw = rand_buf(DType::F32, C, 35), db = rand_buf(DType::F32, C, 36);
          be.layernorm_backward(dt, dy.p(), x.p(), w.p(), mean.f(), rstd.f(), dx.p(), dw.f(),
                                bias ? db.f() : nullptr, N, C);
          return Outs{{"y", y}, {"mean", mean}, {"rstd", rstd}, {"dx", dx}, {"dw", dw}, {"db", db}};
        });
      }
}

// With one column x == mean, so the layernorm gradient is exactly 0 and dx
// must keep its bits, even though rstd = 1/sqrt(eps) magnifies any rounding.
TEST(CpuKernels, LayerNormOneColumnIsExact) {
  for (const std::string& level : levels_here())
    for (DType dt : kDtypes) {
      auto be = keel::backend::make_cpu_backend(level);
      const int64_t N = 300;
      Buf x = rand_buf(dt, N, 37, -5, 5), w = rand_buf(dt, 1, 38), b = rand_buf(dt, 1, 39);
      Buf y(dt, N), mean(DType::F32, N), rstd(DType::F32, N);
      be->layernorm_forward(dt, x.p(), w.p(), b.p(), y.p(), mean.f(), rstd.f(), N, 1, 1e-5f);
      Buf dy = rand_buf(dt, N, 40), dx = rand_buf(dt, N, 41), dx0 = dx;
      Buf dw(DType::F32, 1), db(DType::F32, 1);
      be->layernorm_backward(dt, dy.p(), x.p(), w.p(), mean.f(), rstd.f(), dx.p(), dw.f(), db.f(),
                             N, 1);
      EXPECT_TRUE(dx.bytes == dx0.bytes) << level << " " << keel::dtype_name(dt);
    }
}

// Elementwise kernels use the same operations at every width (explicit FMAs,
// IEEE division and square root, the same exp polynomial), so every vector
// level must give the scalar level's bits: this is how the AVX-512 path is
// held to the tested one on machines that have it.
TEST(CpuKernels, ElementwiseSameBitsAtEveryLevel) {
  auto scalar = keel::backend::make_cpu_backend("scalar");
  const int64_t n = 40000 + 13;
  auto run = [&](Backend& be, DType dt) {
    Buf x = rand_buf(dt, n, 120, -12, 12), u = rand_buf(dt, n, 121), dy = rand_buf(dt, n, 122);
    Buf gy(dt, n), gdx = rand_buf(dt, n, 123), sy(dt, n), sdx = rand_buf(dt, n, 124);
    Buf wy(dt, n), wdg = rand_buf(dt, n, 125), wdu = rand_buf(dt, n, 126);
    Buf acc = rand_buf(dt, n, 127), ce(DType::F32, n);
    be.gelu_forward(dt, x.p(), gy.p(), n);
    be.gelu_backward(dt, x.p(), dy.p(), gdx.p(), n);
    be.silu_forward(dt, x.p(), sy.p(), n);
    be.silu_backward(dt, x.p(), dy.p(), sdx.p(), n);
    be.swiglu_forward(dt, x.p(), u.p(), wy.p(), n);
    be.swiglu_backward(dt, x.p(), u.p(), dy.p(), wdg.p(), wdu.p(), n);
    be.accumulate(dt, x.p(), acc.p(), n, 0.3f);
    be.cast(dt, x.p(), DType::F32, ce.p(), n);
    AdamWArgs a;
    a.n = n, a.lr = 1e-2f, a.weight_decay = 0.1f, a.t = 3;
    Buf p = rand_buf(DType::F32, n, 128), g = rand_buf(DType::F32, n, 129);
    Buf m = rand_buf(DType::F32, n, 130), v = rand_buf(DType::F32, n, 131, 0, 1);
    Buf pb(DType::BF16, n);
    be.adamw_update(a, p.f(), g.f(), m.f(), v.f(), reinterpret_cast<uint16_t*>(pb.p()));
    return Outs{{"gelu", gy},   {"dgelu", gdx}, {"silu", sy},      {"dsilu", sdx}, {"swiglu", wy},
                {"dgate", wdg}, {"dup", wdu},   {"acc", acc},      {"cast", ce},   {"param", p},
                {"m", m},       {"v", v},       {"param_bf16", pb}};
  };
  for (DType dt : {DType::F32, DType::BF16, DType::F16}) {
    Outs want = run(*scalar, dt);
    for (const std::string& level : levels_here()) {
      auto be = keel::backend::make_cpu_backend(level);
      expect_identical(run(*be, dt), want,
                       "elementwise " + std::string(keel::dtype_name(dt)) + " @" + level);
    }
  }
}

// Rounding f32 to bf16 in the vector store (one instruction on AVX512-BF16,
// which flushes subnormal inputs) against keel::f32_to_bf16, bit for bit: ties,
// subnormals of both signs, NaNs with payloads, infinities, the overflow
// threshold. Subnormals sit in some 16-value vectors and not in others, so
// both the one-instruction path and the exact fallback run.
TEST(CpuKernels, Bf16StoreRoundsLikeTheScalarRule) {
  auto f = [](uint32_t u) {
    float x;
    std::memcpy(&x, &u, 4);
    return x;
  };
  std::vector<float> v;
  const keel::Rng rng(77, 0);
  for (uint64_t i = 0; i < 4096; ++i) v.push_back(f(uint32_t(rng.below(i, uint64_t(1) << 32))));
  const uint32_t specials[] = {0x00000001u, 0x80000001u, 0x007fffffu, 0x807fffffu, 0x00008000u,
                               0x00018000u, 0x00800000u, 0x3f808000u, 0x3f818000u, 0x7f7f8000u,
                               0x7f7fffffu, 0x7f800000u, 0xff800000u, 0x7f800001u, 0xffc12345u,
                               0x7fbfffffu, 0x00000000u, 0x80000000u};
  for (size_t k = 0; k < std::size(specials); ++k) v[k * 97 % 2048] = f(specials[k]);
  for (size_t k = 0; k < 2048; ++k) v[2048 + k] = f(0x3f800000u + uint32_t(k) * 0x8000u);
  const int64_t n = int64_t(v.size());
  for (const std::string& level : levels_here()) {
    auto be = keel::backend::make_cpu_backend(level);
    std::vector<uint16_t> out(v.size());
    be->cast(DType::F32, v.data(), DType::BF16, out.data(), n);
    for (int64_t i = 0; i < n; ++i) {
      uint32_t u;
      std::memcpy(&u, &v[size_t(i)], 4);
      ASSERT_EQ(out[size_t(i)], keel::f32_to_bf16(v[size_t(i)]))
          << "level " << level << " index " << i << " input bits 0x" << std::hex << u;
    }
  }
}

TEST(CpuKernels, RmsNorm) {
  for (DType dt : kDtypes)
    for (auto [N, C] : kNormShapes) {
      check(name_of("rmsnorm", dt, N * C) + " C=" + std::to_string(C), tol_for(dt),
            [&](Backend& be) {
              Buf x = rand_buf(dt, N * C, 40, -2, 3), w = rand_buf(dt, C, 41, 0.5, 1.5);
              Buf y(dt, N * C), rstd(DType::F32, N);
              be.rmsnorm_forward(dt, x.p(), w.p(), y.p(), rstd.f(), N, C, 1e-6f);
              Buf dy = rand_buf(dt, N * C, 42), dx = rand_buf(dt, N * C, 43);
              Buf dw = rand_buf(DType::F32, C, 44);
              be.rmsnorm_backward(dt, dy.p(), x.p(), w.p(), rstd.f(), dx.p(), dw.f(), N, C);
              return Outs{{"y", y}, {"rstd", rstd}, {"dx", dx}, {"dw", dw}};
            });
    }
}

TEST(CpuKernels, Rope) {
  for (DType dt : kDtypes)
    for (int64_t HS : {2, 6, 16, 34, 64})
      for (int64_t pad : {0, 5}) {
        RopeArgs a;
        a.B = 2, a.T = 41, a.NH = 4, a.HS = HS, a.pos0 = 3, a.dt = dt;
        a.row_stride = a.NH * HS + pad;
        a.batch_stride = a.T * a.row_stride;
        int64_t n = a.B * a.batch_stride;
        check(name_of("rope", dt, n) + " HS=" + std::to_string(HS), tol_for(dt), [&](Backend& be) {
          Buf x = rand_buf(dt, n, 50), y = rand_buf(dt, n, 51);
          be.rope_forward(a, x.p(), y.p());
          Buf inplace = x;
          be.rope_forward(a, inplace.p(), inplace.p());
          Buf dy = rand_buf(dt, n, 52), dx = rand_buf(dt, n, 53);
          be.rope_backward(a, dy.p(), dx.p());
          return Outs{{"y", y}, {"inplace", inplace}, {"dx", dx}};
        });
      }
}

// The cpu backend keeps each thread's last cos/sin table: decode-shaped
// calls that change only the position, only theta, or only T must each get
// their own table (a stale one rotates by the wrong angles).
TEST(CpuKernels, RopeTableFollowsPositionThetaAndLength) {
  struct Step {
    int64_t pos0, T;
    float theta;
  };
  const Step steps[] = {{5, 1, 1e4f}, {6, 1, 1e4f}, {5, 1, 5e5f},
                        {5, 3, 5e5f}, {5, 3, 1e4f}, {5, 1, 1e4f}};
  for (const Step& st : steps) {
    RopeArgs a;
    a.B = 1, a.T = st.T, a.NH = 3, a.HS = 16, a.pos0 = st.pos0, a.theta = st.theta;
    a.row_stride = a.NH * a.HS;
    a.batch_stride = a.T * a.row_stride;
    const int64_t n = a.batch_stride;
    check("rope pos0=" + std::to_string(st.pos0) + " T=" + std::to_string(st.T) +
              " theta=" + std::to_string(st.theta),
          tol_for(DType::F32), [&](Backend& be) {
            Buf x = rand_buf(DType::F32, n, 60), y = rand_buf(DType::F32, n, 61);
            be.rope_forward(a, x.p(), y.p());
            return Outs{{"y", y}};
          });
  }
}

struct AttnCase {
  int64_t B, Tq, Tk, NH, NKV, HS;
  bool fused;        // q, k, v interleaved in one (B, T, NH + 2 NKV, HS) buffer
  float ramp = 0.f;  // key j scaled by 1 + ramp j: later keys outscore earlier ones
};

TEST(CpuKernels, Attention) {
  const std::vector<AttnCase> cases = {{1, 1, 1, 1, 1, 8, false},
                                       {2, 7, 7, 4, 4, 16, false},
                                       {2, 70, 70, 4, 2, 33, false},
                                       {1, 67, 67, 4, 1, 64, true},
                                       {2, 3, 70, 2, 1, 16, false},
                                       // Several 64- and 128-key tiles, a partial last
                                       // one; queries after past keys: on CPUs with
                                       // AVX512-BF16 these take the bf16 pair path.
                                       {1, 200, 200, 2, 1, 64, false},
                                       {1, 40, 100, 2, 2, 32, false},
                                       // Three heads per kv head, a partial last query
                                       // block and key tile, the diagonal crossing
                                       // 128-key tiles at several offsets.
                                       {1, 300, 300, 3, 1, 64, false},
                                       // Decode rows: one query over several key
                                       // blocks and a partial one (keys four at a
                                       // time, odd count), HS off the vector width,
                                       // fewer keys than four.
                                       {2, 1, 151, 6, 2, 64, false},
                                       {1, 1, 77, 3, 3, 40, false},
                                       {1, 1, 3, 2, 1, 32, false},
                                       // Decode rows split over key chunks: 2 chunks
                                       // (odd sizes), 32 chunks of 21-22 keys past a
                                       // 64-key block, GQA.
                                       {2, 1, 33, 4, 2, 64, false},
                                       {1, 1, 700, 6, 3, 64, false},
                                       // Scores that rise key tile after key tile far
                                       // past each row's running maximum (the
                                       // forwards' one-pass tiles must give way).
                                       {1, 400, 400, 2, 1, 64, false, 1.f / 8}};
  for (DType dt : kDtypes)
    for (const AttnCase& c : cases) {
      AttentionArgs a;
      a.B = c.B, a.Tq = c.Tq, a.Tk = c.Tk, a.NH = c.NH, a.NKV = c.NKV, a.HS = c.HS, a.dt = dt;
      a.scale = 1.f / std::sqrt(float(c.HS));
      int64_t qn, kn;
      if (c.fused) {  // Tq == Tk
        int64_t row = (c.NH + 2 * c.NKV) * c.HS;
        a.q_row_stride = a.kv_row_stride = row;
        a.q_batch_stride = a.kv_batch_stride = c.Tq * row;
        qn = kn = c.B * c.Tq * row;
      } else {
        a.q_row_stride = c.NH * c.HS, a.q_batch_stride = c.Tq * a.q_row_stride;
        a.kv_row_stride = c.NKV * c.HS, a.kv_batch_stride = c.Tk * a.kv_row_stride;
        qn = c.B * a.q_batch_stride;
        kn = c.B * a.kv_batch_stride;
      }
      int64_t on = c.B * c.Tq * c.NH * c.HS;
      std::string what = "attention " + std::string(keel::dtype_name(dt)) +
                         " Tq=" + std::to_string(c.Tq) + " Tk=" + std::to_string(c.Tk) +
                         " NH/NKV=" + std::to_string(c.NH) + "/" + std::to_string(c.NKV) +
                         " HS=" + std::to_string(c.HS) + (c.fused ? " fused" : "") +
                         (c.ramp != 0.f ? " rising" : "");
      check(what, tol_for(dt), [&](Backend& be) {
        Buf q = rand_buf(dt, qn, 60, -2, 2), k = rand_buf(dt, kn, 61, -2, 2);
        Buf v = rand_buf(dt, kn, 62);
        if (c.ramp != 0.f)
          for (int64_t i = 0; i < kn; ++i)
            k.set(i, k.get(i) * (1.f + c.ramp * float(i % a.kv_batch_stride / a.kv_row_stride)));
        // In the fused layout k and v live after q's heads in the same rows.
        const unsigned char* kp = k.bytes.data();
        const unsigned char* vp = v.bytes.data();
        size_t es = keel::dtype_size(dt);
        if (c.fused) {
          kp = q.bytes.data() + size_t(c.NH * c.HS) * es;
          vp = q.bytes.data() + size_t((c.NH + c.NKV) * c.HS) * es;
        }
        Buf o(dt, on), lse(DType::F32, c.B * c.NH * c.Tq);
        be.attention_forward(a, q.p(), kp, vp, o.p(), lse.f());
        Buf dout = rand_buf(dt, on, 63);
        Buf dq = rand_buf(dt, qn, 64), dk = rand_buf(dt, kn, 65), dv = rand_buf(dt, kn, 66);
        unsigned char* dkp = dk.bytes.data();
        unsigned char* dvp = dv.bytes.data();
        if (c.fused) {
          dkp = dq.bytes.data() + size_t(c.NH * c.HS) * es;
          dvp = dq.bytes.data() + size_t((c.NH + c.NKV) * c.HS) * es;
        }
        be.attention_backward(a, dout.p(), q.p(), kp, vp, o.p(), lse.f(), dq.p(), dkp, dvp);
        return Outs{{"o", o}, {"lse", lse}, {"dq", dq}, {"dk", dk}, {"dv", dv}};
      });
    }
}

// A decode row whose scores rise key after key: every later key block of a
// chunk and every later chunk passes the running maximum, so each online
// rescale and each merge weight is exercised (random scores rarely do that).
// 2,200 keys make chunks of 68-69 keys, a 64-key block and a short one.
TEST(CpuKernels, DecodeAttentionRisingScores) {
  for (DType dt : kDtypes) {
    AttentionArgs a;
    a.B = 1, a.Tq = 1, a.Tk = 2200, a.NH = 2, a.NKV = 1, a.HS = 48, a.dt = dt;
    a.scale = 1.f / std::sqrt(float(a.HS));
    a.q_row_stride = a.q_batch_stride = a.NH * a.HS;
    a.kv_row_stride = a.HS, a.kv_batch_stride = a.Tk * a.HS;
    check("decode attention, rising scores " + std::string(keel::dtype_name(dt)), tol_for(dt),
          [&](Backend& be) {
            Buf q(dt, a.NH * a.HS), k(dt, a.Tk * a.HS);
            for (int64_t i = 0; i < q.n(); ++i) q.set(i, 0.5f);
            Buf noise = rand_buf(DType::F32, k.n(), 67, -0.1f, 0.1f);
            for (int64_t i = 0; i < k.n(); ++i) k.set(i, 0.005f * float(i / a.HS) + noise.get(i));
            Buf v = rand_buf(dt, k.n(), 68);
            Buf o(dt, a.NH * a.HS), lse(DType::F32, a.NH);
            be.attention_forward(a, q.p(), k.p(), v.p(), o.p(), lse.f());
            return Outs{{"o", o}, {"lse", lse}};
          });
  }
}

// The bf16 attention products' 4 x 4 blocks in assembly give the bits of the
// intrinsics they replace (CpuKernels.Attention checks the attention around
// them against ref).
TEST(CpuKernels, Bf16TileAssemblyMatchesIntrinsics) {
  if (!cpu::level_available(cpu::Level::Avx512) || !keel::cpu_features().avx512_bf16)
    GTEST_SKIP() << "no AVX512-BF16 here";
  EXPECT_EQ(cpu::bf16_tile_block_mismatches(2000), 0);
}

// The same for the f32 products' 6 x 4 blocks on AVX-512.
TEST(CpuKernels, F32TileAssemblyMatchesIntrinsics) {
  if (!cpu::level_available(cpu::Level::Avx512)) GTEST_SKIP() << "no AVX-512 here";
  EXPECT_EQ(cpu::f32_tile_block_mismatches(2000), 0);
}

TEST(CpuKernels, CrossEntropy) {
  for (DType dt : kDtypes)
    for (int64_t V : {1, 7, 769, 5003}) {
      const int64_t N = 6;
      check(name_of("cross_entropy", dt, N * V) + " V=" + std::to_string(V), tol_for(dt),
            [&](Backend& be) {
              Buf logits = rand_buf(dt, N * V, 70, -8, 8);
              std::vector<int32_t> t(N);
              for (int64_t i = 0; i < N; ++i) t[size_t(i)] = int32_t((i * 7919) % V);
              t[2] = -1;  // ignored row
              Buf losses(DType::F32, N), lse(DType::F32, N);
              be.cross_entropy_forward(dt, logits.p(), t.data(), losses.f(), lse.f(), N, V);
              Buf dloss = rand_buf(DType::F32, N, 71, 0.5, 2), dl = rand_buf(dt, N * V, 72);
              be.cross_entropy_backward(dt, logits.p(), t.data(), lse.f(), dloss.f(), dl.p(), N, V);
              return Outs{{"losses", losses}, {"lse", lse}, {"dlogits", dl}};
            });
    }
}

TEST(CpuKernels, AdamW) {
  for (int64_t n : kSizes)
    for (bool with_bf16 : {false, true}) {
      AdamWArgs a;
      a.n = n, a.lr = 1e-3f, a.weight_decay = 0.1f, a.grad_scale = 0.7f, a.t = 5;
      check(name_of("adamw", DType::F32, n), tol_for(DType::F32), [&](Backend& be) {
        Buf p = rand_buf(DType::F32, n, 80), g = rand_buf(DType::F32, n, 81);
        Buf m = rand_buf(DType::F32, n, 82, -0.1f, 0.1f), v = rand_buf(DType::F32, n, 83, 0, 0.01f);
        Buf pb(DType::BF16, n);
        be.adamw_update(a, p.f(), g.f(), m.f(), v.f(),
                        with_bf16 ? reinterpret_cast<uint16_t*>(pb.p()) : nullptr);
        return Outs{{"param", p}, {"m", m}, {"v", v}, {"param_bf16", pb}};
      });
    }
}

TEST(CpuKernels, Reduce) {
  for (DType dt : kDtypes)
    for (auto [N, C] : kNormShapes)
      for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Max}) {
        check(name_of("reduce" + std::to_string(int(op)), dt, N * C), tol_for(dt),
              [&](Backend& be) {
                Buf x = rand_buf(dt, N * C, 90, -4, 4), y(DType::F32, N);
                be.reduce_forward(op, dt, x.p(), y.f(), N, C);
                Buf dy = rand_buf(DType::F32, N, 91), dx = rand_buf(dt, N * C, 92);
                be.reduce_backward(op, dt, x.p(), dy.f(), dx.p(), N, C);
                return Outs{{"y", y}, {"dx", dx}};
              });
      }
}

// Health checks rely on NaN reaching the loss and the row maxima.
TEST(CpuKernels, NaNPropagates) {
  for (const std::string& level : levels_here()) {
    auto be = keel::backend::make_cpu_backend(level);
    const int64_t V = 5000;
    Buf logits = rand_buf(DType::F32, 2 * V, 94);
    logits.set(V + 4321, NAN);
    std::vector<int32_t> t = {3, 7};
    Buf losses(DType::F32, 2), lse(DType::F32, 2);
    be->cross_entropy_forward(DType::F32, logits.p(), t.data(), losses.f(), lse.f(), 2, V);
    EXPECT_TRUE(std::isfinite(losses.get(0))) << level;
    EXPECT_TRUE(std::isnan(losses.get(1)) && std::isnan(lse.get(1))) << level;

    Buf x = rand_buf(DType::F32, 2 * 37, 93);
    x.set(37 + 20, NAN);
    x.set(5, INFINITY);
    Buf y(DType::F32, 2);
    be->reduce_forward(ReduceOp::Max, DType::F32, x.p(), y.f(), 2, 37);
    EXPECT_EQ(y.get(0), INFINITY) << level;
    EXPECT_TRUE(std::isnan(y.get(1))) << level;
  }
}

TEST(CpuKernels, SumSquares) {
  for (DType dt : {DType::F32, DType::BF16, DType::F16})
    for (int64_t n : {int64_t(1), int64_t(33), int64_t(769), int64_t(100003)}) {
      Buf x = rand_buf(dt, n, 100, -3, 3);
      double want = keel::backend::make_backend("ref")->sum_squares_host(dt, x.p(), n);
      for (const std::string& level : levels_here()) {
        auto be = keel::backend::make_cpu_backend(level);
        be->set_threads(1);
        double one = be->sum_squares_host(dt, x.p(), n);
        EXPECT_NEAR(one, want, 1e-12 * want + 1e-30) << name_of("sum_squares", dt, n) << level;
        be->set_threads(2);
        EXPECT_EQ(one, be->sum_squares_host(dt, x.p(), n)) << level;
        be->set_threads(3);
        EXPECT_EQ(one, be->sum_squares_host(dt, x.p(), n)) << level;
      }
    }
}

// Every 16-bit pattern through every conversion: must equal ref bit for bit
// (NaNs compared as NaN, since hardware f16 conversion keeps payload bits).
TEST(CpuKernels, CastExhaustive16Bit) {
  const int64_t n = 65536 + 13;
  Buf f32(DType::F32, n);
  for (int64_t i = 0; i < n; ++i) {
    uint32_t u = uint32_t(i % 65536) << 16 | uint32_t(i * 2654435761u) >> 16;
    float v;
    std::memcpy(&v, &u, 4);
    f32.set(i, v);
  }
  auto ref = keel::backend::make_backend("ref");
  for (DType src : {DType::F32, DType::BF16, DType::F16})
    for (DType dst : {DType::F32, DType::BF16, DType::F16}) {
      Buf in(src, n);
      if (src == DType::F32) {
        in = f32;
      } else {
        for (int64_t i = 0; i < n; ++i) {
          uint16_t h = uint16_t(i);
          std::memcpy(in.bytes.data() + 2 * i, &h, 2);
        }
      }
      Buf want(dst, n);
      ref->cast(src, in.p(), dst, want.p(), n);
      for (const std::string& level : levels_here()) {
        auto be = keel::backend::make_cpu_backend(level);
        Buf got(dst, n);
        be->cast(src, in.p(), dst, got.p(), n);
        int bad = 0;
        for (int64_t i = 0; i < n; ++i) {
          float a = got.get(i), b = want.get(i);
          bool same = std::isnan(b) ? std::isnan(a) : std::memcmp(&a, &b, 4) == 0;
          if (!same && ++bad <= 3)
            ADD_FAILURE() << "cast " << keel::dtype_name(src) << "->" << keel::dtype_name(dst)
                          << " @" << level << " [" << i << "]: cpu " << a << " ref " << b;
        }
        EXPECT_EQ(bad, 0);
      }
    }
}

TEST(CpuKernels, Embedding) {
  for (DType dt : kDtypes)
    for (int64_t C : {1, 7, 33, 300, 769}) {
      const int64_t V = 11, n = 150;
      // Exact: a lookup copies, and the backward adds rows in id order like ref.
      check(name_of("embedding", dt, n * C) + " C=" + std::to_string(C), {0, 0}, [&](Backend& be) {
        std::vector<int32_t> ids(n);
        for (int64_t i = 0; i < n; ++i) ids[size_t(i)] = int32_t((i * i + 3 * i) % V);
        Buf table = rand_buf(dt, V * C, 110), out(dt, n * C);
        be.embedding_forward(dt, ids.data(), table.p(), out.p(), n, C);
        Buf dout = rand_buf(dt, n * C, 111), dtable = rand_buf(DType::F32, V * C, 112);
        be.embedding_backward(dt, ids.data(), dout.p(), dtable.f(), n, C);
        return Outs{{"out", out}, {"dtable", dtable}};
      });
    }
}

// The softmax's exp2 against std::exp2 in double over the whole range the
// attention kernels feed it (scores minus their max, in base 2): within 2.5e-7
// relative where the result is a normal float, 0 at and below -127, exp2(0) = 1
// exactly, NaN kept. 2.5e-7 is about two float ulps (2 x 1.19e-7): the
// polynomial's own error (1.66e-7 measured) plus the rounding of the result.
// It runs the portable lane, so the bound does not depend on the CPU.
TEST(CpuKernels, SoftmaxExp2MatchesStdExp) {
  using keel::backend::cpu::exp_check::exp2_nonpos_v;
  using keel::backend::cpu::exp_check::Scalar;
  double worst = 0;
  for (int64_t i = 0; i <= 2000000; ++i) {
    const float x = -126.f * float(i) / 2000000.f;
    const double want = std::exp2(double(x));
    worst = std::max(worst, std::fabs(double(exp2_nonpos_v<Scalar>(x)) - want) / want);
  }
  EXPECT_LT(worst, 2.5e-7);
  EXPECT_EQ(exp2_nonpos_v<Scalar>(0.f), 1.f);
  EXPECT_EQ(exp2_nonpos_v<Scalar>(-127.f), 0.f);
  EXPECT_EQ(exp2_nonpos_v<Scalar>(-INFINITY), 0.f);
  EXPECT_TRUE(std::isnan(exp2_nonpos_v<Scalar>(NAN)));
}

}  // namespace
