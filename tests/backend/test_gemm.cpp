// The cpu GEMM against a double-precision loop: odd shapes, every transpose,
// padded strides, batches, alpha/beta, bf16 through both implementations, and
// bit-identical results for 1, 2 and 3 threads with every library present.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/gemm.h"
#include "backend/cpu/gemm_internal.h"
#include "backend/cpu/gemv.h"
#include "backend/cpu/gemv_team.h"
#include "core/cpu_features.h"
#include "core/dtype.h"
#include "core/error.h"

namespace keel::backend::cpu {
namespace {

struct Case {
  int64_t M, N, K;
};

// Engines this machine can run, as KEEL_GEMM values.
std::vector<std::string> engines() {
  std::vector<std::string> e{"portable"};
  if (gemm_detail::openblas().sgemm) e.push_back("openblas");
  if (gemm_detail::onednn_available()) e.push_back("onednn");
  e.push_back("auto");
  return e;
}

// Sets an environment variable for the scope of one test section.
class EnvScope {
 public:
  EnvScope(const char* name, const std::string& value) : name_(name) {
    const char* old = std::getenv(name);
    had_ = old != nullptr;
    if (had_) old_ = old;
    setenv(name, value.c_str(), 1);
  }
  ~EnvScope() {
    if (had_)
      setenv(name_, old_.c_str(), 1);
    else
      unsetenv(name_);
  }

 private:
  const char* name_;
  bool had_ = false;
  std::string old_;
};

std::vector<float> randn(size_t n, uint32_t seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d;
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

// Stored sizes of op(A) / op(B) with leading dimensions padded by `pad`.
struct Layout {
  MatmulArgs a;
  size_t na, nc;  // elements of A and C (B: span_b)
};

Layout layout(Case c, bool ta, bool tb, int64_t pad, int64_t batch, bool shared_b) {
  MatmulArgs a;
  a.trans_a = ta;
  a.trans_b = tb;
  a.M = c.M;
  a.N = c.N;
  a.K = c.K;
  a.lda = (ta ? c.M : c.K) + pad;
  a.ldb = (tb ? c.K : c.N) + pad;
  a.ldc = c.N + pad;
  a.batch = batch;
  a.stride_a = (ta ? c.K : c.M) * a.lda;
  a.stride_b = shared_b ? 0 : (tb ? c.N : c.K) * a.ldb;
  a.stride_c = c.M * a.ldc;
  return {a, size_t(batch * a.stride_a), size_t(batch * a.stride_c)};
}

// Reference in double; also returns the error bound each element may have.
void reference(const MatmulArgs& a, const std::vector<float>& A, const std::vector<float>& B,
               const std::vector<float>& C0, std::vector<double>& ref, std::vector<double>& tol) {
  ref.assign(C0.size(), 0.0);
  tol.assign(C0.size(), 0.0);
  const double u = std::ldexp(1.0, -24);
  for (int64_t b = 0; b < a.batch; ++b)
    for (int64_t i = 0; i < a.M; ++i)
      for (int64_t j = 0; j < a.N; ++j) {
        double s = 0, mag = 0;
        for (int64_t k = 0; k < a.K; ++k) {
          double x =
              a.trans_a ? A[b * a.stride_a + k * a.lda + i] : A[b * a.stride_a + i * a.lda + k];
          double y =
              a.trans_b ? B[b * a.stride_b + j * a.ldb + k] : B[b * a.stride_b + k * a.ldb + j];
          s += x * y;
          mag += std::fabs(x * y);
        }
        const size_t o = size_t(b * a.stride_c + i * a.ldc + j);
        const double c0 = a.beta == 0.f ? 0.0 : double(C0[o]);
        ref[o] = a.alpha * s + a.beta * c0;
        // f32 summation bound gamma_K, generous for blocked orders and FMA.
        tol[o] = (a.K + 4) * u * (std::fabs(a.alpha) * mag + std::fabs(a.beta * c0)) + 1e-30;
      }
}

size_t span_b(const MatmulArgs& a) {
  const int64_t rows = a.trans_b ? a.N : a.K;
  return size_t((a.stride_b == 0 ? 0 : (a.batch - 1) * a.stride_b) + rows * a.ldb);
}

void check_f32(Case c, bool ta, bool tb, int64_t pad, int64_t batch, bool shared_b, float alpha,
               float beta, int threads) {
  Layout l = layout(c, ta, tb, pad, batch, shared_b);
  MatmulArgs a = l.a;
  a.alpha = alpha;
  a.beta = beta;
  auto A = randn(l.na, 1), B = randn(span_b(a), 2), C = randn(l.nc, 3);
  std::vector<double> ref, tol;
  reference(a, A, B, C, ref, tol);
  gemm(a, A.data(), B.data(), C.data(), threads);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t i = 0; i < c.M; ++i)
      for (int64_t j = 0; j < c.N; ++j) {
        const size_t o = size_t(b * a.stride_c + i * a.ldc + j);
        ASSERT_NEAR(C[o], ref[o], tol[o])
            << "M=" << c.M << " N=" << c.N << " K=" << c.K << " ta=" << ta << " tb=" << tb
            << " batch=" << batch << " at (" << b << "," << i << "," << j << ")";
      }
}

const Case kShapes[] = {{1, 1, 1},   {7, 5, 3},      {1, 33, 65},
                        {33, 1, 17}, {65, 129, 257}, {200, 130, 70}};

TEST(Gemm, F32AllEnginesShapesAndTransposes) {
  for (const auto& e : engines()) {
    EnvScope env("KEEL_GEMM", e);
    for (Case c : kShapes)
      for (int t = 0; t < 4; ++t) {
        SCOPED_TRACE("engine " + e);
        check_f32(c, t & 1, t & 2, 0, 1, false, 1.f, 0.f, 2);
        if (HasFatalFailure()) return;
      }
  }
}

TEST(Gemm, F32PaddedStridesAlphaBeta) {
  for (const auto& e : engines()) {
    EnvScope env("KEEL_GEMM", e);
    SCOPED_TRACE("engine " + e);
    for (int t = 0; t < 4; ++t)
      check_f32({65, 129, 257}, t & 1, t & 2, 3, 1, false, 0.5f, -1.25f, 2);
    check_f32({7, 9, 11}, false, true, 1, 1, false, 2.f, 1.f, 1);
  }
}

TEST(Gemm, F32Batched) {
  for (const auto& e : engines()) {
    EnvScope env("KEEL_GEMM", e);
    SCOPED_TRACE("engine " + e);
    check_f32({17, 33, 9}, false, false, 0, 5, false, 1.f, 0.f, 2);
    check_f32({17, 33, 9}, true, true, 2, 3, false, 1.f, 0.5f, 2);
    check_f32({130, 140, 150}, false, true, 0, 3, true, 1.f, 0.f, 2);  // B shared, blocked
  }
}

TEST(Gemm, BetaZeroIgnoresNaNInC) {
  for (const auto& e : engines()) {
    EnvScope env("KEEL_GEMM", e);
    MatmulArgs a;
    a.M = 3;
    a.N = 4;
    a.K = 5;
    a.lda = 5;
    a.ldb = 4;
    a.ldc = 4;
    std::vector<float> A(15, 1.f), B(20, 2.f), C(12, std::numeric_limits<float>::quiet_NaN());
    gemm(a, A.data(), B.data(), C.data(), 2);
    for (float v : C) EXPECT_EQ(v, 10.f) << e;
  }
}

TEST(Gemm, KZeroScalesC) {
  MatmulArgs a;
  a.M = 2;
  a.N = 3;
  a.K = 0;
  a.lda = 1;
  a.ldb = 3;
  a.ldc = 3;
  a.beta = 0.5f;
  std::vector<float> C(6, 4.f);
  gemm(a, nullptr, nullptr, C.data(), 2);
  for (float v : C) EXPECT_EQ(v, 2.f);
}

// Runs l's product on 1, 2 and 3 threads and expects the same f32 C bits.
void expect_same_bits_at_1_2_3_threads(const Layout& l, const void* A, const void* B,
                                       const std::string& mode, Case c, int t) {
  std::vector<float> C1(l.nc), C2(l.nc), C3(l.nc);
  gemm(l.a, A, B, C1.data(), 1);
  gemm(l.a, A, B, C2.data(), 2);
  gemm(l.a, A, B, C3.data(), 3);
  EXPECT_EQ(0, std::memcmp(C1.data(), C2.data(), C1.size() * 4))
      << mode << " M=" << c.M << " N=" << c.N << " K=" << c.K << " t=" << t;
  EXPECT_EQ(0, std::memcmp(C1.data(), C3.data(), C1.size() * 4))
      << mode << " M=" << c.M << " N=" << c.N << " K=" << c.K << " t=" << t;
}

// Same inputs, 1, 2 and 3 threads: C must be bit-identical (the blocks are
// fixed by the shape; each library runs single-threaded inside a block).
TEST(Gemm, ThreadCountDoesNotChangeBits) {
  const Case cases[] = {{256, 1536, 384}, {1536, 384, 256}, {65, 129, 257}, {64, 64, 8192}};
  for (const auto& e : engines()) {
    EnvScope env("KEEL_GEMM", e);
    for (Case c : cases) {
      if (e == "portable" && c.M * c.N * c.K > (1 << 24)) continue;  // slow engine, small case
      for (int t = 0; t < 4; ++t) {
        Layout l = layout(c, t & 1, t & 2, 0, 1, false);
        auto A = randn(l.na, 4), B = randn(span_b(l.a), 5);
        expect_same_bits_at_1_2_3_threads(l, A.data(), B.data(), e, c, t);
      }
    }
  }
}

// The GEMV of every vector level gives the same bits (each output one
// 16-lane dot in a fixed tree), for 1 to 8 x rows (AVX-512 tiles 4 W rows x
// 4 x rows and reduces 16 sums at once), W row counts that leave partial
// tiles, K with and without a tail past the last 16, padded strides, alpha
// and beta.
TEST(Gemv, EveryLevelGivesTheSameBits) {
  std::vector<std::pair<const char*, gemv_detail::GemvFn>> levels = {
      {"scalar", gemv_detail::gemv_scalar()}};
  if (keel::cpu_features().avx2 && keel::cpu_features().fma)
    levels.push_back({"avx2", gemv_detail::gemv_avx2()});
  if (keel::cpu_features().avx512f) levels.push_back({"avx512", gemv_detail::gemv_avx512()});
  if (levels.size() < 2) GTEST_SKIP() << "only the scalar level runs here";
  for (int64_t M = 1; M <= kGemvMaxRows; ++M)
    for (int64_t N : {1, 3, 4, 7, 64, 70})
      for (int64_t K : {16, 37, 768}) {
        const int64_t ldx = K + 3, ldw = K + 5, ldy = N + 2;
        const auto x = randn(size_t(M * ldx), 11), w = randn(size_t(N * ldw), 12);
        const auto y0 = randn(size_t(M * ldy), 13);
        for (float beta : {0.f, 0.5f}) {
          std::vector<std::vector<float>> out;
          for (const auto& [name, fn] : levels) {
            std::vector<float> y = y0;
            // Two calls over rows [0, N/2) and [N/2, N), as the team's items cut them.
            fn(x.data(), ldx, M, w.data(), ldw, K, y.data(), ldy, 0, N / 2, 1.5f, beta);
            fn(x.data(), ldx, M, w.data(), ldw, K, y.data(), ldy, N / 2, N, 1.5f, beta);
            out.push_back(std::move(y));
          }
          for (size_t l = 1; l < levels.size(); ++l)
            ASSERT_EQ(0, std::memcmp(out[0].data(), out[l].data(), out[0].size() * sizeof(float)))
                << levels[l].first << " vs scalar: M=" << M << " N=" << N << " K=" << K
                << " beta=" << beta;
        }
      }
}

// The decode team runs every item once, on up to `threads` threads, and
// with two threads each one's items lie in one or two runs: the caller takes
// the first half from its front, the helper the second half, and a thread
// that runs out takes the other's last items. Items handed out alternately
// (every other block of the weights to each thread) fail this.
TEST(GemvTeam, EveryItemOnceInContiguousRuns) {
  constexpr int64_t n = 400;
  bool helper_ran = false;
  for (int threads : {2, 3}) {
    for (int round = 0; round < 20; ++round) {
      std::vector<std::atomic<int>> runs(n);
      std::vector<std::thread::id> by(n);
      team_for(threads, n, [&](int64_t i) {
        runs[size_t(i)].fetch_add(1);
        by[size_t(i)] = std::this_thread::get_id();
        // Long enough for the helpers to wake up and take their share.
        const auto t0 = std::chrono::steady_clock::now();
        while (std::chrono::steady_clock::now() - t0 < std::chrono::microseconds(20)) {
        }
      });
      int switches = 0;
      for (int64_t i = 0; i < n; ++i) {
        ASSERT_EQ(runs[size_t(i)].load(), 1) << "item " << i << ", round " << round;
        switches += i > 0 && by[size_t(i)] != by[size_t(i - 1)];
      }
      helper_ran = helper_ran || switches > 0;
      if (threads == 2) {
        EXPECT_LE(switches, 2) << "the two threads' items alternate " << switches
                               << " times, round " << round;
      }
    }
  }
  // On a machine so busy that no helper ever ran, the split went untested.
  if (!helper_ran) GTEST_SKIP() << "no helper thread took an item";
}

// Many short jobs back to back, as a decode step issues them: each returns
// only once every one of its items has run, whichever thread ran it, and
// never runs an item of another job (a helper that wakes late must not count
// its items toward the wrong job).
TEST(GemvTeam, BackToBackJobsEndWithAllTheirItems) {
  for (int threads : {2, 3}) {
    for (int job = 0; job < 3000; ++job) {
      const int64_t n = 1 + job % 7;
      std::atomic<int64_t> ran{0};
      std::atomic<int> wrong{0};
      team_for(threads, n, [&](int64_t i) {
        if (i < 0 || i >= n) wrong.fetch_add(1);
        const auto t0 = std::chrono::steady_clock::now();
        while (std::chrono::steady_clock::now() - t0 < std::chrono::microseconds(job % 3)) {
        }
        ran.fetch_add(1);
      });
      ASSERT_EQ(ran.load(), n) << "job " << job << ", threads " << threads;
      ASSERT_EQ(wrong.load(), 0) << "job " << job;
    }
  }
}

bool cpu_has_bf16_tile() {
  return cpu_features().avx512_bf16 && gemm_detail::allow_avx512();
}

std::vector<std::string> bf16_modes() {
  std::vector<std::string> m{"convert", "auto"};
  // oneDNN 2.x has bf16 matmul only on AVX-512 CPUs; elsewhere the mode is an error.
  if (gemm_detail::onednn_bf16_supported()) m.push_back("onednn");
  if (cpu_has_bf16_tile()) m.push_back("tile");
  return m;
}

void check_bf16(Case c, bool ta, bool tb, int64_t batch, DType cdt, float alpha, float beta) {
  Layout l = layout(c, ta, tb, 1, batch, false);
  MatmulArgs a = l.a;
  a.a_dtype = a.b_dtype = DType::BF16;
  a.c_dtype = cdt;
  a.alpha = alpha;
  a.beta = beta;
  // Inputs are bf16 values; the reference sees exactly those values.
  auto A = randn(l.na, 7), B = randn(span_b(a), 8), C = randn(l.nc, 9);
  std::vector<uint16_t> A16(A.size()), B16(B.size()), C16(C.size());
  for (size_t i = 0; i < A.size(); ++i) A[i] = bf16_to_f32(A16[i] = f32_to_bf16(A[i]));
  for (size_t i = 0; i < B.size(); ++i) B[i] = bf16_to_f32(B16[i] = f32_to_bf16(B[i]));
  for (size_t i = 0; i < C.size(); ++i) C[i] = bf16_to_f32(C16[i] = f32_to_bf16(C[i]));
  std::vector<double> ref, tol;
  reference(a, A, B, C, ref, tol);
  std::vector<float> Cf = C;
  if (cdt == DType::F32)
    gemm(a, A16.data(), B16.data(), Cf.data(), 2);
  else
    gemm(a, A16.data(), B16.data(), C16.data(), 2);
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t i = 0; i < c.M; ++i)
      for (int64_t j = 0; j < c.N; ++j) {
        const size_t o = size_t(b * a.stride_c + i * a.ldc + j);
        if (cdt == DType::F32) {
          ASSERT_NEAR(Cf[o], ref[o], tol[o]) << "f32 out at " << o;
        } else {
          // One rounding to bf16 (half an ulp = 2^-9 relative) on top of the f32 error.
          const double t = tol[o] + std::fabs(ref[o]) * std::ldexp(1.0, -8);
          ASSERT_NEAR(bf16_to_f32(C16[o]), ref[o], t) << "bf16 out at " << o;
        }
      }
}

TEST(Gemm, Bf16BothImplementations) {
  for (const auto& m : bf16_modes()) {
    EnvScope env("KEEL_BF16_GEMM", m);
    SCOPED_TRACE("KEEL_BF16_GEMM=" + m);
    for (int t = 0; t < 4; ++t) {
      check_bf16({65, 129, 257}, t & 1, t & 2, 1, DType::F32, 1.f, 0.f);
      check_bf16({33, 7, 65}, t & 1, t & 2, 2, DType::BF16, 1.f, 0.f);
    }
    check_bf16({200, 130, 70}, false, true, 1, DType::BF16, 0.5f, 1.f);
    check_bf16({1, 40, 3}, false, false, 3, DType::F32, 2.f, -1.f);
    // More rows than columns, N past two blocks and not a multiple of 64:
    // oneDNN's blocks then run along N unless A is transposed.
    for (int t = 0; t < 4; ++t) check_bf16({700, 333, 150}, t & 1, t & 2, 1, DType::F32, 1.f, 0.f);
    // K past the tile kernel's k blocks, C accumulated (in place for f32 C with
    // whole 16-column vectors, through its f32 copy for bf16 C or odd N).
    for (int t = 0; t < 4; ++t) {
      check_bf16({200, 128, 801}, t & 1, t & 2, 1, DType::F32, 1.f, 1.f);
      check_bf16({131, 96, 800}, t & 1, t & 2, 1, DType::BF16, 1.f, 1.f);
      check_bf16({97, 45, 1000}, t & 1, t & 2, 1, DType::F32, 1.f, 0.5f);
    }
  }
}

// A 1 x 1 x 1 bf16 product under KEEL_BF16_GEMM=mode must be refused.
void expect_bf16_mode_refused(const char* mode) {
  EnvScope env("KEEL_BF16_GEMM", mode);
  MatmulArgs a;
  a.M = a.N = a.K = a.lda = a.ldb = a.ldc = 1;
  a.a_dtype = a.b_dtype = DType::BF16;
  uint16_t x = 0x3f80, y = 0x3f80;
  float z = 0;
  EXPECT_THROW(gemm(a, &x, &y, &z, 1), KernelError);
}

TEST(Gemm, Bf16TileModeWithoutAvx512Bf16IsAnError) {
  if (cpu_has_bf16_tile()) GTEST_SKIP() << "this CPU has AVX512-BF16";
  expect_bf16_mode_refused("tile");
}

TEST(Gemm, Bf16ThreadCountDoesNotChangeBits) {
  const Case cases[] = {{1536, 384, 256}, {256, 1536, 384}, {700, 333, 150}};
  for (const auto& m : bf16_modes()) {
    EnvScope env("KEEL_BF16_GEMM", m);
    for (Case c : cases)
      for (int t = 0; t < 4; ++t) {
        Layout l = layout(c, t & 1, t & 2, 0, 1, false);
        l.a.a_dtype = l.a.b_dtype = DType::BF16;
        std::vector<uint16_t> A(l.na), B(span_b(l.a));
        const auto fa = randn(A.size(), 4), fb = randn(B.size(), 5);
        for (size_t i = 0; i < A.size(); ++i) A[i] = f32_to_bf16(fa[i]);
        for (size_t i = 0; i < B.size(); ++i) B[i] = f32_to_bf16(fb[i]);
        expect_same_bits_at_1_2_3_threads(l, A.data(), B.data(), m, c, t);
      }
  }
}

TEST(Gemm, Bf16OutputRoundsOnceFromF32) {
  // With exact products, bf16 output must equal rounding the f32 result.
  for (const auto& m : bf16_modes()) {
    EnvScope env("KEEL_BF16_GEMM", m);
    MatmulArgs a;
    a.M = 4;
    a.N = 8;
    a.K = 16;
    a.lda = 16;
    a.ldb = 8;
    a.ldc = 8;
    a.a_dtype = a.b_dtype = DType::BF16;
    std::vector<uint16_t> A(64), B(128), C(32);
    std::vector<float> Cf(32);
    for (size_t i = 0; i < A.size(); ++i) A[i] = f32_to_bf16(1.f + float(i % 5) / 128.f);
    for (size_t i = 0; i < B.size(); ++i) B[i] = f32_to_bf16(1.f + float(i % 7) / 64.f);
    a.c_dtype = DType::F32;
    gemm(a, A.data(), B.data(), Cf.data(), 1);
    a.c_dtype = DType::BF16;
    gemm(a, A.data(), B.data(), C.data(), 1);
    for (size_t i = 0; i < C.size(); ++i) EXPECT_EQ(C[i], f32_to_bf16(Cf[i])) << m << " at " << i;
  }
}

TEST(Gemm, ConversionsMatchScalar) {
  auto v = randn(1003, 11);
  v[0] = std::numeric_limits<float>::quiet_NaN();
  v[1] = -std::numeric_limits<float>::infinity();
  v[2] = 1.00390625f;  // exactly halfway between two bf16 values: ties to even
  v[3] = 1.01171875f;
  std::vector<uint16_t> h(v.size());
  gemm_detail::f32_to_bf16_n(v.data(), h.data(), int64_t(v.size()));
  for (size_t i = 0; i < v.size(); ++i) EXPECT_EQ(h[i], f32_to_bf16(v[i])) << i;
  std::vector<float> back(v.size());
  gemm_detail::bf16_to_f32_n(h.data(), back.data(), int64_t(v.size()));
  for (size_t i = 0; i < v.size(); ++i) {
    const float want = bf16_to_f32(h[i]);
    EXPECT_EQ(0, std::memcmp(&back[i], &want, 4)) << i;
  }
}

TEST(Gemm, Bf16OneDnnModeWithoutSupportIsAnError) {
  if (gemm_detail::onednn_bf16_supported()) GTEST_SKIP() << "oneDNN bf16 runs here";
  expect_bf16_mode_refused("onednn");
}

// The ref backend is the oracle of `keel verify`: same answer within f32 rounding.
TEST(Gemm, AgreesWithRefBackend) {
  std::unique_ptr<Backend> ref;
  try {
    ref = make_backend("ref");
  } catch (const Error& e) {
    GTEST_SKIP() << e.what();
  }
  for (int t = 0; t < 4; ++t) {
    Layout l = layout({33, 65, 129}, t & 1, t & 2, 2, 2, false);
    l.a.beta = 0.5f;
    auto A = randn(l.na, 21), B = randn(span_b(l.a), 22), C = randn(l.nc, 23);
    std::vector<float> R = C;
    ref->matmul(l.a, A.data(), B.data(), R.data());
    gemm(l.a, A.data(), B.data(), C.data(), 2);
    for (size_t i = 0; i < C.size(); ++i)
      ASSERT_NEAR(C[i], R[i], 1e-4f * (1 + std::fabs(R[i]))) << i;
  }
}

TEST(Gemm, BadModeIsAnError) {
  EnvScope env("KEEL_GEMM", "fastest");
  MatmulArgs a;
  a.M = a.N = a.K = a.lda = a.ldb = a.ldc = 1;
  float x = 1, y = 1, z = 0;
  EXPECT_THROW(gemm(a, &x, &y, &z, 1), KernelError);
}

// keel picks OpenBLAS's kernel set before the library loads: the strongest
// core this CPU runs unless KEEL_BLAS_CORETYPE says otherwise, whatever
// OPENBLAS_CORETYPE the environment set (ctests gemm_core_* run this test
// with weak cores in the environment). The kernels then pass a float64 check.
TEST(Gemm, CoreChoiceFollowsKeelBlasCoretype) {
  const auto& ob = gemm_detail::openblas();
  if (ob.path.empty()) GTEST_SKIP() << "no OpenBLAS on this machine";
  ASSERT_TRUE(ob.sgemm != nullptr) << ob.warning;
  EXPECT_LT(ob.self_check_error, 1e-5);
  EXPECT_GT(ob.self_check_error, 0.0);  // the check ran on real numbers
  const CpuFeatures& f = cpu_features();
  const bool avx512 = f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq;
  const char* k = std::getenv("KEEL_BLAS_CORETYPE");
  const std::string mode = k ? k : "auto";
  if (mode == "env") {
    // The environment's choice is kept, and a weaker one is reported.
    const char* e = std::getenv("OPENBLAS_CORETYPE");
    if (e && std::string(e) == "Haswell") {
      EXPECT_EQ(ob.corename, "Haswell");
      if (avx512) {
        EXPECT_NE(ob.warning.find("KEEL_BLAS_CORETYPE"), std::string::npos) << ob.warning;
      }
    }
    return;
  }
  ASSERT_EQ(mode, "auto");
  EXPECT_TRUE(ob.warning.empty()) << ob.warning;
  if (avx512) {
    EXPECT_EQ(ob.corename, f.avx512_bf16 ? "Cooperlake" : "SkylakeX") << ob.core_reason;
  } else if (f.avx2 && f.fma) {
    EXPECT_TRUE(ob.corename == "Haswell" || ob.corename == "Zen") << ob.corename;
  }
  EXPECT_NE(gemm_describe().find(ob.core_reason), std::string::npos);
}

// KEEL_GEMM=auto: oneDNN for every f32 shape on AVX-512 CPUs (measured
// faster there), elsewhere OpenBLAS but for the tall A^T*B weight gradient.
TEST(Gemm, AutoEngineFollowsTheCpu) {
  if (!gemm_detail::onednn_available() || !gemm_detail::openblas().sgemm)
    GTEST_SKIP() << "needs both OpenBLAS and oneDNN";
  EnvScope env("KEEL_GEMM", "auto");
  MatmulArgs fwd, tall;
  fwd.M = 1024, fwd.N = 3072, fwd.K = 768, fwd.trans_b = true;
  tall.M = 50304, tall.N = 768, tall.K = 1024, tall.trans_a = true;
  using gemm_detail::Engine;
  EXPECT_EQ(gemm_detail::choose_engine(tall), Engine::OneDnn);
  EXPECT_EQ(gemm_detail::choose_engine(fwd),
            gemm_detail::allow_avx512() ? Engine::OneDnn : Engine::OpenBlas);
  EXPECT_NE(gemm_describe().find(gemm_detail::allow_avx512() ? "f32 engine: onednn (with avx-512"
                                                             : "openblas otherwise"),
            std::string::npos)
      << gemm_describe();
}

TEST(Gemm, DescribeNamesTheLibrary) {
  const std::string d = gemm_describe();
  if (gemm_detail::openblas().sgemm) {
    EXPECT_NE(d.find("openblas"), std::string::npos) << d;
    EXPECT_NE(d.find("core="), std::string::npos) << d;
  } else {
    EXPECT_NE(d.find("portable"), std::string::npos) << d;
  }
}

}  // namespace
}  // namespace keel::backend::cpu
