// The cpu backend is deterministic: every kernel (GEMM included: it promises
// blocks fixed by the shape alone) gives bit-identical outputs run to run and
// with 1 or 2 threads, over the conformance cases plus large ones where the
// work is actually split between threads.
#include <gtest/gtest.h>

#include "backend/conformance/conformance.h"
#include "backend/cpu/cpu_backend.h"
#include "forwarding_backend.h"

namespace keel::backend {
namespace {

ConformanceOptions with_large() {
  ConformanceOptions o;
  o.large = true;
  return o;
}

void expect_all_identical(const std::vector<ConformanceRow>& rows) {
  ASSERT_FALSE(rows.empty());
  int ran = 0;
  for (const auto& r : rows) {
    EXPECT_EQ(r.status, ConformanceStatus::Pass)
        << r.name << " " << r.dtype << " " << direction_name(r.dir) << ": " << r.detail;
    EXPECT_EQ(r.max_abs_err, 0.0) << r.name << " " << r.dtype << ": " << r.worst;
    ran += r.cases;
  }
  EXPECT_GT(ran, 1500);
}

TEST(Determinism, RunToRunBitIdentical) {
  // The conformance shapes only: the large ones run in the test below, where
  // a run-to-run difference would show up as well.
  auto cpu = make_cpu_backend();
  expect_all_identical(run_repeatability(*cpu, 2, 2));
}

TEST(Determinism, OneVersusTwoThreadsBitIdentical) {
  auto cpu = make_cpu_backend();
  expect_all_identical(run_repeatability(*cpu, 1, 2, with_large()));
}

TEST(Determinism, ThreadCountIsRestored) {
  auto cpu = make_cpu_backend();
  cpu->set_threads(1);
  ConformanceOptions o;
  o.kernel = Kernel::Add;
  run_repeatability(*cpu, 2, 2, o);
  EXPECT_EQ(cpu->threads(), 1);
}

// The check can fail: a result that depends on the thread count is caught,
// in exactly the kernel that has the dependence.
class ThreadDependentGelu : public ForwardingBackend {
 public:
  using ForwardingBackend::ForwardingBackend;
  void gelu_forward(DType dt, const void* x, void* y, int64_t n) override {
    in_->gelu_forward(dt, x, y, n);
    if (dt == DType::F32 && n > 100) static_cast<float*>(y)[n / 2] += 1e-6f * float(threads());
  }
};

TEST(Determinism, ThreadDependenceIsDetected) {
  ThreadDependentGelu be(make_cpu_backend());
  ConformanceOptions o;
  o.kernel = Kernel::Gelu;
  auto rows = run_repeatability(be, 1, 2, o);
  int failed = 0;
  for (const auto& r : rows) {
    bool expect_fail = r.dtype == "f32" && r.dir == Direction::Forward;
    EXPECT_EQ(r.status == ConformanceStatus::Fail, expect_fail) << r.dtype << ": " << r.detail;
    failed += r.status == ConformanceStatus::Fail;
  }
  EXPECT_EQ(failed, 1);
  // Same thread count both times: identical again.
  auto same = run_repeatability(be, 2, 2, o);
  EXPECT_EQ(count_status(same, ConformanceStatus::Fail), 0);
}

}  // namespace
}  // namespace keel::backend
