// The conformance suite itself: cpu passes against ref, and a backend broken
// in exactly one kernel (wrong value, overwrite instead of accumulate, write
// past the end, NaN, modified input) fails in exactly that row.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "backend/conformance/conformance.h"
#include "backend/cpu/cpu_backend.h"
#include "backend/ref/ref_backend.h"
#include "backend/stub/stub_backend.h"
#include "core/error.h"
#include "forwarding_backend.h"

namespace keel::backend {
namespace {

std::string describe_rows(const std::vector<ConformanceRow>& rows) {
  return format_conformance_table(rows);
}

std::vector<const ConformanceRow*> failing(const std::vector<ConformanceRow>& rows) {
  std::vector<const ConformanceRow*> f;
  for (const auto& r : rows)
    if (r.status == ConformanceStatus::Fail) f.push_back(&r);
  return f;
}

// Rows of a run over one family must show exactly one FAIL: (name, dtype, dir).
void expect_single_failure(const std::vector<ConformanceRow>& rows, const std::string& name,
                           const std::string& dtype, Direction dir, const std::string& detail_has) {
  auto f = failing(rows);
  ASSERT_EQ(f.size(), 1u) << describe_rows(rows);
  EXPECT_EQ(f[0]->name, name);
  EXPECT_EQ(f[0]->dtype, dtype);
  EXPECT_EQ(f[0]->dir, dir);
  EXPECT_NE(f[0]->detail.find(detail_has), std::string::npos) << f[0]->detail;
  // The other rows of the family still ran and passed.
  int passed = count_status(rows, ConformanceStatus::Pass);
  EXPECT_GE(passed, 1) << describe_rows(rows);
}

ConformanceOptions only(Kernel k) {
  ConformanceOptions o;
  o.kernel = k;
  return o;
}

TEST(Conformance, CpuPassesAgainstRef) {
  auto ref = make_ref_backend();
  auto cpu = make_cpu_backend();
  auto rows = run_conformance(*cpu, *ref);
  EXPECT_EQ(count_status(rows, ConformanceStatus::Fail), 0) << describe_rows(rows);
  // Every family is covered by at least one row that ran cases.
  std::set<Kernel> ran;
  for (const auto& r : rows)
    if (r.status == ConformanceStatus::Pass && r.cases > 0) ran.insert(r.kernel);
  EXPECT_EQ(int(ran.size()), kKernelCount) << describe_rows(rows);
  // f32 is the floor every backend supports.
  for (const auto& r : rows)
    if (r.dtype == "f32") {
      EXPECT_NE(r.status, ConformanceStatus::Skip) << r.name;
    }
}

TEST(Conformance, RefAgainstItselfIsExact) {
  auto a = make_ref_backend();
  auto b = make_ref_backend();
  ConformanceOptions o;
  o.skip_kernels = {Kernel::Matmul, Kernel::Attention};  // the slowest on ref; covered above
  auto rows = run_conformance(*a, *b, o);
  for (const auto& r : rows) {
    EXPECT_EQ(r.status, ConformanceStatus::Pass) << r.name << " " << r.dtype << ": " << r.detail;
    EXPECT_EQ(r.max_abs_err, 0.0) << r.name << " " << r.dtype << ": " << r.worst;
  }
}

TEST(Conformance, SeedChangesInputsNotVerdict) {
  auto ref = make_ref_backend();
  auto cpu = make_cpu_backend();
  ConformanceOptions o = only(Kernel::RmsNorm);
  o.seed = 77;
  auto rows = run_conformance(*cpu, *ref, o);
  EXPECT_EQ(count_status(rows, ConformanceStatus::Fail), 0) << describe_rows(rows);
  auto rows1 = run_conformance(*cpu, *ref, only(Kernel::RmsNorm));
  ASSERT_EQ(rows.size(), rows1.size());
  bool any_diff = false;
  for (size_t i = 0; i < rows.size(); ++i) any_diff |= rows[i].max_abs_err != rows1[i].max_abs_err;
  EXPECT_TRUE(any_diff) << "a different seed should give different inputs";
}

// ---- deliberately broken backends

// gelu forward off by 1e-2 in f32 only.
class GeluOffByOne : public ForwardingBackend {
 public:
  using ForwardingBackend::ForwardingBackend;
  void gelu_forward(DType dt, const void* x, void* y, int64_t n) override {
    in_->gelu_forward(dt, x, y, n);
    if (dt == DType::F32)
      for (int64_t i = 0; i < n; ++i) static_cast<float*>(y)[i] += 1e-2f;
  }
};

TEST(Conformance, WrongValueFailsExactlyThatRow) {
  auto ref = make_ref_backend();
  GeluOffByOne bad(make_cpu_backend());
  // The whole suite, not one family: nothing else may fail.
  auto rows = run_conformance(bad, *ref);
  expect_single_failure(rows, "gelu", "f32", Direction::Forward, "tolerance");
}

// rmsnorm backward that overwrites dx instead of accumulating into it.
class RmsNormOverwrites : public ForwardingBackend {
 public:
  using ForwardingBackend::ForwardingBackend;
  void rmsnorm_backward(DType dt, const void* dy, const void* x, const void* w, const float* rstd,
                        void* dx, float* dw, int64_t N, int64_t C) override {
    if (dt == DType::F32) std::memset(dx, 0, size_t(N * C) * sizeof(float));
    in_->rmsnorm_backward(dt, dy, x, w, rstd, dx, dw, N, C);
  }
};

TEST(Conformance, OverwritingBackwardFails) {
  auto ref = make_ref_backend();
  RmsNormOverwrites bad(make_cpu_backend());
  auto rows = run_conformance(bad, *ref, only(Kernel::RmsNorm));
  expect_single_failure(rows, "rmsnorm", "f32", Direction::Backward, "dx[");
}

// silu forward that writes one element past the end of y.
class SiluWritesPastEnd : public ForwardingBackend {
 public:
  using ForwardingBackend::ForwardingBackend;
  void silu_forward(DType dt, const void* x, void* y, int64_t n) override {
    in_->silu_forward(dt, x, y, n);
    if (dt == DType::BF16) static_cast<uint16_t*>(y)[n] = 0;
  }
};

TEST(Conformance, OutOfBoundsWriteFails) {
  auto ref = make_ref_backend();
  SiluWritesPastEnd bad(make_cpu_backend());
  auto rows = run_conformance(bad, *ref, only(Kernel::Silu));
  expect_single_failure(rows, "silu", "bf16", Direction::Forward, "guard bytes");
}

// bias_backward that writes one float before dbias.
class BiasWritesBefore : public ForwardingBackend {
 public:
  using ForwardingBackend::ForwardingBackend;
  void bias_backward(DType dt, const void* dy, float* dbias, int64_t N, int64_t C) override {
    in_->bias_backward(dt, dy, dbias, N, C);
    if (dt == DType::F32) dbias[-1] = 1.f;
  }
};

TEST(Conformance, WriteBeforeStartFails) {
  auto ref = make_ref_backend();
  BiasWritesBefore bad(make_cpu_backend());
  auto rows = run_conformance(bad, *ref, only(Kernel::BiasAdd));
  expect_single_failure(rows, "bias_add", "f32", Direction::Backward, "guard bytes");
}

// swiglu forward that returns NaN for one element in long inputs.
class SwigluNaN : public ForwardingBackend {
 public:
  using ForwardingBackend::ForwardingBackend;
  void swiglu_forward(DType dt, const void* gate, const void* up, void* y, int64_t n) override {
    in_->swiglu_forward(dt, gate, up, y, n);
    if (dt == DType::F32 && n > 1000) static_cast<float*>(y)[n - 3] = NAN;
  }
};

TEST(Conformance, NaNMismatchFails) {
  auto ref = make_ref_backend();
  SwigluNaN bad(make_cpu_backend());
  auto rows = run_conformance(bad, *ref, only(Kernel::SwiGlu));
  expect_single_failure(rows, "swiglu", "f32", Direction::Forward, "NaN mismatch");
}

// accumulate that scribbles on its input x.
class AccumulateWritesInput : public ForwardingBackend {
 public:
  using ForwardingBackend::ForwardingBackend;
  void accumulate(DType dt, const void* x, void* y, int64_t n, float alpha) override {
    in_->accumulate(dt, x, y, n, alpha);
    if (dt == DType::BF16) const_cast<uint16_t*>(static_cast<const uint16_t*>(x))[0] ^= 1;
  }
};

TEST(Conformance, WritingAnInputFails) {
  auto ref = make_ref_backend();
  AccumulateWritesInput bad(make_cpu_backend());
  auto rows = run_conformance(bad, *ref, only(Kernel::Add));
  expect_single_failure(rows, "accumulate", "bf16", Direction::Backward, "wrote into input x");
}

// attention backward that drops the dk gradient (dk not accumulated at all).
class AttentionDropsDk : public ForwardingBackend {
 public:
  using ForwardingBackend::ForwardingBackend;
  void attention_backward(const AttentionArgs& a, const void* dout, const void* q, const void* k,
                          const void* v, const void* o, const float* lse, void* dq, void* dk,
                          void* dv) override {
    if (a.dt != DType::F32) return in_->attention_backward(a, dout, q, k, v, o, lse, dq, dk, dv);
    // Run into a scratch dk of the same layout so the real dk keeps its old contents.
    int64_t n = (a.B - 1) * a.kv_batch_stride + (a.Tk - 1) * a.kv_row_stride + a.NKV * a.HS;
    std::vector<float> scratch(size_t(n), 0.f);
    in_->attention_backward(a, dout, q, k, v, o, lse, dq, scratch.data(), dv);
  }
};

TEST(Conformance, MissingGradientFails) {
  auto ref = make_ref_backend();
  AttentionDropsDk bad(make_cpu_backend());
  auto rows = run_conformance(bad, *ref, only(Kernel::Attention));
  expect_single_failure(rows, "attention", "f32", Direction::Backward, "tolerance");
}

// A kernel the backend says it does not support is SKIP and never called.
class NoBf16Gelu : public ForwardingBackend {
 public:
  using ForwardingBackend::ForwardingBackend;
  bool supports(Kernel k, DType dt) const override {
    return !(k == Kernel::Gelu && dt == DType::BF16) && in_->supports(k, dt);
  }
  void gelu_forward(DType dt, const void* x, void* y, int64_t n) override {
    if (dt == DType::BF16) fail<KernelError>("[gelu] bf16 called although unsupported");
    in_->gelu_forward(dt, x, y, n);
  }
  void gelu_backward(DType dt, const void* x, const void* dy, void* dx, int64_t n) override {
    if (dt == DType::BF16) fail<KernelError>("[gelu] bf16 called although unsupported");
    in_->gelu_backward(dt, x, dy, dx, n);
  }
};

TEST(Conformance, UnsupportedIsSkipNotRunElsewhere) {
  auto ref = make_ref_backend();
  NoBf16Gelu be(make_cpu_backend());
  auto rows = run_conformance(be, *ref, only(Kernel::Gelu));
  EXPECT_EQ(count_status(rows, ConformanceStatus::Fail), 0) << describe_rows(rows);
  int skipped = 0;
  for (const auto& r : rows) {
    if (r.dtype == "bf16") {
      EXPECT_EQ(r.status, ConformanceStatus::Skip);
      EXPECT_EQ(r.cases, 0);
      ++skipped;
    }
  }
  EXPECT_EQ(skipped, 2);  // forward and backward
}

TEST(Conformance, StubIsSkipEverywhere) {
  auto ref = make_ref_backend();
  auto stub = make_stub_backend();
  auto rows = run_conformance(*stub, *ref);
  ASSERT_GE(rows.size(), size_t(kKernelCount));
  std::set<Kernel> seen;
  for (const auto& r : rows) {
    EXPECT_EQ(r.status, ConformanceStatus::Skip) << r.name << " " << r.dtype;
    EXPECT_EQ(r.cases, 0);
    EXPECT_NE(r.detail.find("'stub'"), std::string::npos) << r.detail;
    seen.insert(r.kernel);
  }
  EXPECT_EQ(int(seen.size()), kKernelCount);
}

TEST(Conformance, StubKernelsThrowNamingTheKernel) {
  auto stub = make_stub_backend();
  float x[4] = {}, y[4] = {};
  try {
    stub->gelu_forward(DType::F32, x, y, 4);
    FAIL() << "stub gelu did not throw";
  } catch (const KernelError& e) {
    EXPECT_STREQ(e.what(), "[gelu] has no implementation on backend 'stub'");
  }
  EXPECT_THROW(stub->sum_squares_host(DType::F32, x, 4), KernelError);
  EXPECT_THROW(stub->matmul(MatmulArgs{}, x, x, y), KernelError);
  EXPECT_FALSE(stub->supports(Kernel::Cast, DType::F32));
}

TEST(Conformance, KernelNames) {
  for (int k = 0; k < kKernelCount; ++k)
    EXPECT_EQ(kernel_from_name(kernel_name(Kernel(k))), Kernel(k));
  try {
    kernel_from_name("gemm");
    FAIL() << "no error for an unknown kernel";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'gemm'"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("matmul"), std::string::npos);
  }
}

TEST(Conformance, TableHasOneLinePerRow) {
  auto ref = make_ref_backend();
  auto cpu = make_cpu_backend();
  auto rows = run_conformance(*cpu, *ref, only(Kernel::Reduce));
  std::string t = format_conformance_table(rows);
  EXPECT_EQ(size_t(std::count(t.begin(), t.end(), '\n')), rows.size() + 1) << t;
  EXPECT_NE(t.find("reduce.max"), std::string::npos);
  EXPECT_NE(format_conformance_summary(rows).find("0 FAIL"), std::string::npos);
}

}  // namespace
}  // namespace keel::backend
