// The Vulkan runtime on whatever device the loader offers (lavapipe in CI):
// device listing and choice, pool sub-allocation, transfers, out-of-memory
// errors, and every kernel against the ref backend, bit-identical on repeat.
// Built with Vulkan on, a missing device is a failure, not a skip.
#ifdef KEEL_HAVE_VULKAN
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "backend/vulkan/vk_context.h"
#include "backend/vulkan/vk_kernels.h"
#include "backend/vulkan/vk_memory_pool.h"
#include "backend/vulkan/vk_pipeline.h"
#include "backend/vulkan/vk_stream.h"
#include "core/dtype.h"
#include "core/error.h"

namespace keel::vulkan {
namespace {

using backend::MatmulArgs;

ContextOptions validated(ContextOptions o = {}) {
  o.validation = true;  // used when VK_LAYER_KHRONOS_validation is installed
  return o;
}

// One context for the kernel tests; its construction error, if any, fails
// every test that needs it with the runtime's own message.
std::unique_ptr<Context>& shared_slot() {
  static std::unique_ptr<Context> c;
  return c;
}
std::string g_ctx_error;
Context* shared() {
  auto& c = shared_slot();
  if (!c && g_ctx_error.empty()) {
    try {
      c = std::make_unique<Context>(validated());
    } catch (const std::exception& e) {
      g_ctx_error = e.what();
    }
  }
  return c.get();
}
#define NEED_CTX()                                                                       \
  Context* ctxp = shared();                                                              \
  ASSERT_NE(ctxp, nullptr) << "built with Vulkan but no usable device: " << g_ctx_error; \
  Context& ctx = *ctxp

backend::Backend& ref() {
  static auto be = backend::make_backend("ref");
  return *be;
}

std::vector<float> randf(size_t n, uint32_t seed, float scale = 1.f) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> d(-scale, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}
std::vector<uint16_t> to_bf16(const std::vector<float>& f) {
  std::vector<uint16_t> v(f.size());
  for (size_t i = 0; i < f.size(); ++i) v[i] = f32_to_bf16(f[i]);
  return v;
}

template <class T>
Buffer upload(Context& ctx, const std::vector<T>& v) {
  Buffer b = ctx.pool().alloc(v.size() * sizeof(T));
  ctx.stream().upload(b, v.data(), v.size() * sizeof(T));
  return b;
}
template <class T>
std::vector<T> download(Context& ctx, const Buffer& b, size_t n) {
  std::vector<T> v(n);
  ctx.stream().download(b, v.data(), n * sizeof(T));
  return v;
}

// Every test ends with the validation layer (when installed) silent.
class VulkanRuntime : public ::testing::Test {
 protected:
  void TearDown() override { EXPECT_EQ(validation_errors(), 0u) << last_validation_message(); }
};

TEST_F(VulkanRuntime, ListsDevices) {
  std::vector<DeviceInfo> devs;
  try {
    devs = list_devices();
  } catch (const std::exception& e) {
    FAIL() << "built with Vulkan but no device: " << e.what();
  }
  ASSERT_FALSE(devs.empty());
  for (const auto& d : devs) {
    EXPECT_FALSE(d.name.empty());
    EXPECT_GE(VK_API_VERSION_MINOR(d.api_version) + 10 * VK_API_VERSION_MAJOR(d.api_version), 12u);
    EXPECT_FALSE(d.heaps.empty());
    std::printf("%s\n", describe_device(d).c_str());
  }
  NEED_CTX();
  EXPECT_EQ(ctx.info().name, devs[ctx.info().index].name);
}

TEST_F(VulkanRuntime, DeviceChoiceByEnvironment) {
  const auto devs = list_devices();
  setenv("KEEL_VULKAN_DEVICE", devs[0].name.substr(0, 4).c_str(), 1);
  {
    Context c;
    EXPECT_EQ(c.info().name.substr(0, 4), devs[0].name.substr(0, 4));
  }
  setenv("KEEL_VULKAN_DEVICE", "no-such-device-xyz", 1);
  try {
    Context c;
    ADD_FAILURE() << "a device name that matches nothing was accepted";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("no-such-device-xyz"), std::string::npos) << m;
    EXPECT_NE(m.find(devs[0].name), std::string::npos) << "the error lists the devices: " << m;
  }
  setenv("KEEL_VULKAN_DEVICE", "99", 1);
  EXPECT_THROW(Context c, Error);
  unsetenv("KEEL_VULKAN_DEVICE");
}

TEST_F(VulkanRuntime, PoolSubAllocatesFreesAndReuses) {
  ContextOptions o = validated();
  o.pool_budget = 8 << 20;
  o.pool_block = 1 << 20;
  Context c(o);
  auto& pool = c.pool();
  EXPECT_EQ(pool.driver_allocations(), 0u);
  std::vector<Buffer> bufs;
  for (int i = 0; i < 300; ++i) bufs.push_back(pool.alloc(1 + (i * 37) % 2000));
  EXPECT_EQ(pool.driver_allocations(), 1u) << "300 small buffers share one driver allocation";
  std::set<std::pair<uint64_t, uint64_t>> ranges;
  for (const auto& b : bufs) {
    EXPECT_EQ(b.offset % pool.alignment(), 0u);
    EXPECT_GE(pool.alignment(), c.limits().minStorageBufferOffsetAlignment);
    ranges.insert({b.offset, b.offset + b.size});
  }
  uint64_t last_end = 0;
  for (const auto& [lo, hi] : ranges) {
    EXPECT_GE(lo, last_end) << "sub-allocations overlap";
    last_end = hi;
  }
  const uint64_t reserved = pool.reserved();
  // Free every other buffer, then allocate the same sizes again: the freed
  // ranges are reused, the pool takes nothing more from the driver.
  std::vector<uint64_t> freed;
  for (size_t i = 0; i < bufs.size(); i += 2) {
    freed.push_back(bufs[i].offset);
    pool.free(bufs[i]);
    EXPECT_FALSE(bufs[i]);
  }
  for (size_t i = 0; i < bufs.size(); i += 2) bufs[i] = pool.alloc(1 + (i * 37) % 2000);
  EXPECT_EQ(pool.reserved(), reserved);
  EXPECT_EQ(pool.driver_allocations(), 1u);
  EXPECT_EQ(bufs[0].offset, freed[0]);
  for (auto& b : bufs) pool.free(b);
  EXPECT_EQ(pool.in_use(), 0u);
  // Everything merged back: one block-sized buffer fits at offset 0.
  Buffer whole = pool.alloc(1 << 20);
  EXPECT_EQ(whole.offset, 0u);
  EXPECT_EQ(pool.driver_allocations(), 1u);
  Buffer more = pool.alloc(3 << 20);  // larger than a block: a block of its own
  EXPECT_EQ(pool.driver_allocations(), 2u);
  pool.free(whole);
  pool.free(more);
}

TEST_F(VulkanRuntime, OutOfMemoryIsANamedError) {
  ContextOptions o = validated();
  o.pool_budget = 4 << 20;
  o.pool_block = 1 << 20;
  Context c(o);
  Buffer keep = c.pool().alloc(3 << 20);
  try {
    c.pool().alloc(8 << 20);
    ADD_FAILURE() << "an allocation over the budget succeeded";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("out of device memory"), std::string::npos) << m;
    EXPECT_NE(m.find("requested 8388608 bytes"), std::string::npos) << m;
    EXPECT_NE(m.find("pool budget 4194304 bytes"), std::string::npos) << m;
  }
  // The pool still works after the refusal.
  Buffer small = c.pool().alloc(1000);
  EXPECT_TRUE(small);
  c.pool().free(small);
  c.pool().free(keep);
  // A request beyond any device's memory on the default budget.
  NEED_CTX();
  try {
    ctx.pool().alloc(uint64_t(1) << 50);
    ADD_FAILURE() << "a 1 PiB allocation succeeded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("requested 1125899906842624 bytes"), std::string::npos)
        << e.what();
  }
}

TEST_F(VulkanRuntime, UploadDownloadCopyAreByteExact) {
  NEED_CTX();
  std::mt19937 g(7);
  for (size_t n : {size_t(1), size_t(255), size_t(4096), size_t(3000001)}) {
    std::vector<uint8_t> src(n);
    for (auto& b : src) b = uint8_t(g());
    Buffer a = upload(ctx, src);
    Buffer b = ctx.pool().alloc(n + 100);
    const uint64_t off = n > 13 ? 13 : 0;
    ctx.stream().copy(a, b, n, 0, off);
    auto back = download<uint8_t>(ctx, a, n);
    std::vector<uint8_t> copied(n);
    ctx.stream().download(b, copied.data(), n, off);
    EXPECT_EQ(0, std::memcmp(back.data(), src.data(), n)) << n;
    EXPECT_EQ(0, std::memcmp(copied.data(), src.data(), n)) << n;
    ctx.pool().free(a);
    ctx.pool().free(b);
  }
  // Upload at an offset leaves the bytes around it alone.
  std::vector<uint8_t> zeros(64, 0), ones(10, 0xab);
  Buffer z = upload(ctx, zeros);
  ctx.stream().upload(z, ones.data(), ones.size(), 20);
  auto got = download<uint8_t>(ctx, z, 64);
  for (size_t i = 0; i < 64; ++i) EXPECT_EQ(got[i], i >= 20 && i < 30 ? 0xab : 0) << i;
  ctx.pool().free(z);
}

struct MmCase {
  int64_t M, N, K;
  bool ta, tb;
  int64_t batch;
  float alpha, beta;
};

// Runs one matmul on the device and in ref over the same (padded, strided)
// buffers and compares the whole C buffer, gaps included.
void check_matmul(Context& ctx, const MmCase& c, DType ab, DType cd, uint32_t seed) {
  MatmulArgs a;
  a.trans_a = c.ta;
  a.trans_b = c.tb;
  a.M = c.M;
  a.N = c.N;
  a.K = c.K;
  a.lda = (c.ta ? c.M : c.K) + 3;  // padded rows: ld > the logical width
  a.ldb = (c.tb ? c.K : c.N) + 1;
  a.ldc = c.N + 2;
  const int64_t rows_a = c.ta ? c.K : c.M, rows_b = c.tb ? c.N : c.K;
  a.batch = c.batch;
  a.stride_a = rows_a * a.lda + 5;
  a.stride_b = rows_b * a.ldb + 7;
  a.stride_c = c.M * a.ldc + 1;
  a.alpha = c.alpha;
  a.beta = c.beta;
  a.a_dtype = a.b_dtype = ab;
  a.c_dtype = cd;
  const size_t na = size_t(a.stride_a * c.batch), nb = size_t(a.stride_b * c.batch),
               nc = size_t(a.stride_c * c.batch);
  auto fa = randf(na, seed), fb = randf(nb, seed + 1), fc = randf(nc, seed + 2);
  const std::string what =
      fmt::format("{}x{}x{} {}{} batch {} alpha {} beta {} {}->{}", c.M, c.N, c.K, c.ta ? 'T' : 'N',
                  c.tb ? 'T' : 'N', c.batch, c.alpha, c.beta, dtype_name(ab), dtype_name(cd));
  // bound on |error|: f32 accumulation over K terms of |a||b| <= 1, plus one
  // bf16 rounding of the output when C is bf16.
  const double acc_tol = 1e-6 * double(c.K + 1) * 4 + 1e-6;
  std::vector<float> out(nc), want(nc);
  if (ab == DType::F32) {
    Buffer A = upload(ctx, fa), B = upload(ctx, fb), C = upload(ctx, fc);
    matmul(ctx, a, A, B, C);
    out = download<float>(ctx, C, nc);
    want = fc;
    ref().matmul(a, fa.data(), fb.data(), want.data());
    for (auto* b : {&A, &B, &C}) ctx.pool().free(*b);
  } else {
    auto ha = to_bf16(fa), hb = to_bf16(fb);
    Buffer A = upload(ctx, ha), B = upload(ctx, hb);
    if (cd == DType::F32) {
      Buffer C = upload(ctx, fc);
      matmul(ctx, a, A, B, C);
      out = download<float>(ctx, C, nc);
      want = fc;
      ref().matmul(a, ha.data(), hb.data(), want.data());
      ctx.pool().free(C);
    } else {
      auto hc = to_bf16(fc), wc = hc;
      Buffer C = upload(ctx, hc);
      matmul(ctx, a, A, B, C);
      auto o16 = download<uint16_t>(ctx, C, nc);
      ref().matmul(a, ha.data(), hb.data(), wc.data());
      for (size_t i = 0; i < nc; ++i) {
        out[i] = bf16_to_f32(o16[i]);
        want[i] = bf16_to_f32(wc[i]);
      }
      ctx.pool().free(C);
    }
    ctx.pool().free(A);
    ctx.pool().free(B);
  }
  const double out_tol = cd == DType::BF16 ? 1.0 / 128 : 0;
  int bad = 0;
  for (size_t i = 0; i < nc && bad < 5; ++i) {
    const double tol = acc_tol + out_tol * std::abs(want[i]);
    if (!(std::abs(double(out[i]) - double(want[i])) <= tol)) {
      ADD_FAILURE() << what << ": C[" << i << "] = " << out[i] << ", ref " << want[i];
      ++bad;
    }
  }
}

const MmCase kCases[] = {
    {1, 1, 1, false, false, 1, 1.f, 0.f},       {17, 33, 65, false, false, 1, 1.f, 0.f},
    {17, 33, 65, true, false, 1, 1.f, 0.f},     {17, 33, 65, false, true, 1, 1.f, 0.f},
    {17, 33, 65, true, true, 1, 0.5f, 0.75f},   {31, 7, 100, false, true, 3, 1.f, 1.f},
    {64, 40, 33, true, false, 3, -1.5f, 0.25f}, {5, 70, 3, false, false, 2, 2.f, 0.f},
};

TEST_F(VulkanRuntime, MatmulF32MatchesRef) {
  NEED_CTX();
  uint32_t seed = 1;
  for (const auto& c : kCases) check_matmul(ctx, c, DType::F32, DType::F32, seed += 3);
}

TEST_F(VulkanRuntime, MatmulBf16MatchesRef) {
  NEED_CTX();
  uint32_t seed = 100;
  for (const auto& c : kCases) {
    check_matmul(ctx, c, DType::BF16, DType::F32, seed += 3);
    check_matmul(ctx, c, DType::BF16, DType::BF16, seed += 3);
  }
}

TEST_F(VulkanRuntime, AddMatchesRefBitForBit) {
  NEED_CTX();
  for (int64_t n : {int64_t(1), int64_t(1000), int64_t(300007)}) {
    auto a = randf(size_t(n), 1), b = randf(size_t(n), 2);
    std::vector<float> want(static_cast<size_t>(n));
    ref().add(DType::F32, a.data(), b.data(), want.data(), n);
    Buffer A = upload(ctx, a), B = upload(ctx, b);
    add(ctx, DType::F32, A, B, A, n);  // y aliases a
    EXPECT_EQ(download<float>(ctx, A, size_t(n)), want) << n;
    auto ha = to_bf16(a), hb = to_bf16(b);
    std::vector<uint16_t> hw(static_cast<size_t>(n));
    ref().add(DType::BF16, ha.data(), hb.data(), hw.data(), n);
    Buffer HA = upload(ctx, ha), HB = upload(ctx, hb), HY = ctx.pool().alloc(size_t(n) * 2);
    add(ctx, DType::BF16, HA, HB, HY, n);
    EXPECT_EQ(download<uint16_t>(ctx, HY, size_t(n)), hw) << n;
    for (auto* p : {&A, &B, &HA, &HB, &HY}) ctx.pool().free(*p);
  }
}

TEST_F(VulkanRuntime, RmsNormMatchesRef) {
  NEED_CTX();
  const std::pair<int64_t, int64_t> shapes[] = {{1, 1}, {7, 300}, {3, 1000}, {70, 33}};
  for (auto [N, C] : shapes) {
    for (DType dt : {DType::F32, DType::BF16}) {
      auto x = randf(size_t(N * C), 3, 2.f), w = randf(size_t(C), 4);
      std::vector<float> rstd(static_cast<size_t>(N)), wrstd(static_cast<size_t>(N)),
          y(static_cast<size_t>(N * C)), wy(static_cast<size_t>(N * C));
      Buffer R = ctx.pool().alloc(size_t(N) * 4);
      if (dt == DType::F32) {
        ref().rmsnorm_forward(dt, x.data(), w.data(), wy.data(), wrstd.data(), N, C, 1e-5f);
        Buffer X = upload(ctx, x), W = upload(ctx, w), Y = ctx.pool().alloc(x.size() * 4);
        rmsnorm_forward(ctx, dt, X, W, Y, R, N, C, 1e-5f);
        y = download<float>(ctx, Y, y.size());
        for (auto* p : {&X, &W, &Y}) ctx.pool().free(*p);
      } else {
        auto hx = to_bf16(x), hw = to_bf16(w);
        std::vector<uint16_t> hwy(hx.size());
        ref().rmsnorm_forward(dt, hx.data(), hw.data(), hwy.data(), wrstd.data(), N, C, 1e-5f);
        Buffer X = upload(ctx, hx), W = upload(ctx, hw), Y = ctx.pool().alloc(hx.size() * 2);
        rmsnorm_forward(ctx, dt, X, W, Y, R, N, C, 1e-5f);
        auto hy = download<uint16_t>(ctx, Y, hx.size());
        for (size_t i = 0; i < hy.size(); ++i) {
          y[i] = bf16_to_f32(hy[i]);
          wy[i] = bf16_to_f32(hwy[i]);
        }
        for (auto* p : {&X, &W, &Y}) ctx.pool().free(*p);
      }
      rstd = download<float>(ctx, R, size_t(N));
      ctx.pool().free(R);
      const double rel = dt == DType::BF16 ? 1.0 / 128 : 2e-6;
      for (int64_t i = 0; i < N; ++i)
        EXPECT_NEAR(rstd[size_t(i)], wrstd[size_t(i)], 2e-6 * std::abs(wrstd[size_t(i)]))
            << N << "x" << C << " row " << i;
      int bad = 0;
      for (size_t i = 0; i < y.size() && bad < 5; ++i)
        if (!(std::abs(y[i] - wy[i]) <= rel * std::abs(wy[i]) + 1e-6)) {
          ADD_FAILURE() << N << "x" << C << " " << dtype_name(dt) << " y[" << i << "] = " << y[i]
                        << ", ref " << wy[i];
          ++bad;
        }
    }
  }
}

TEST_F(VulkanRuntime, SumSquaresMatchesRef) {
  NEED_CTX();
  for (int64_t n : {int64_t(0), int64_t(1), int64_t(4095), int64_t(4097), int64_t(1000003)}) {
    auto x = randf(size_t(n), 9);
    Buffer X = upload(ctx, x.empty() ? std::vector<float>{0.f} : x);
    const double want = ref().sum_squares_host(DType::F32, x.data(), n);
    EXPECT_NEAR(sum_squares(ctx, DType::F32, X, n), want, 1e-5 * want + 1e-30) << n;
    auto hx = to_bf16(x.empty() ? std::vector<float>{0.f} : x);
    Buffer HX = upload(ctx, hx);
    const double hwant = ref().sum_squares_host(DType::BF16, hx.data(), n);
    EXPECT_NEAR(sum_squares(ctx, DType::BF16, HX, n), hwant, 1e-5 * hwant + 1e-30) << n;
    ctx.pool().free(X);
    ctx.pool().free(HX);
  }
}

TEST_F(VulkanRuntime, RepeatRunsAreBitIdentical) {
  NEED_CTX();
  MatmulArgs a;
  a.M = 129;
  a.N = 97;
  a.K = 301;
  a.lda = a.K;
  a.ldb = a.N;
  a.ldc = a.N;
  auto fa = randf(size_t(a.M * a.K), 11), fb = randf(size_t(a.K * a.N), 12);
  auto x = randf(500001, 13);
  Buffer A = upload(ctx, fa), B = upload(ctx, fb), C = ctx.pool().alloc(size_t(a.M * a.N) * 4);
  Buffer X = upload(ctx, x), W = upload(ctx, randf(1000, 14)), Y = ctx.pool().alloc(x.size() * 4),
         R = ctx.pool().alloc(501 * 4);
  std::vector<float> first_c, first_y;
  double first_s = 0;
  for (int rep = 0; rep < 3; ++rep) {
    matmul(ctx, a, A, B, C);
    rmsnorm_forward(ctx, DType::F32, X, W, Y, R, 500, 1000, 1e-5f);
    const double s = sum_squares(ctx, DType::F32, X, 500001);
    auto c = download<float>(ctx, C, size_t(a.M * a.N));
    auto y = download<float>(ctx, Y, 500000);
    if (rep == 0) {
      first_c = c;
      first_y = y;
      first_s = s;
    } else {
      EXPECT_EQ(0, std::memcmp(c.data(), first_c.data(), c.size() * 4)) << "matmul rep " << rep;
      EXPECT_EQ(0, std::memcmp(y.data(), first_y.data(), y.size() * 4)) << "rmsnorm rep " << rep;
      EXPECT_EQ(std::memcmp(&s, &first_s, sizeof s), 0) << "sum_squares rep " << rep;
    }
  }
  for (auto* p : {&A, &B, &C, &X, &W, &Y, &R}) ctx.pool().free(*p);
}

TEST_F(VulkanRuntime, PipelinesAreCached) {
  NEED_CTX();
  const Pipeline& first = ctx.pipelines().get("add", 3, 20);
  const size_t n = ctx.pipelines().size();
  EXPECT_GE(n, 1u);
  const Pipeline& again = ctx.pipelines().get("add", 3, 20);
  EXPECT_EQ(first.pipeline, again.pipeline) << "the second request reuses the pipeline";
  EXPECT_EQ(ctx.pipelines().size(), n);
  EXPECT_THROW(ctx.pipelines().get("no_such_shader", 1, 0), Error);
  EXPECT_THROW(ctx.pipelines().get("add", 2, 20), Error);
}

// Last: tear the shared context down and check the validation layer (when
// installed) saw no error in the whole run, teardown included.
TEST_F(VulkanRuntime, TeardownLeavesNoValidationErrors) {
  NEED_CTX();
  const bool validated_run = ctx.validation_enabled();
  shared_slot().reset();
  if (!validated_run)
    std::printf(
        "note: VK_LAYER_KHRONOS_validation not installed (vulkan-validationlayers); "
        "validation not checked\n");
  EXPECT_EQ(validation_errors(), 0u) << last_validation_message();
}

}  // namespace
}  // namespace keel::vulkan
#endif  // KEEL_HAVE_VULKAN
