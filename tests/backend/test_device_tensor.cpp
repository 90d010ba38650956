// Tensors that live in a device backend's memory, driven through ops/ exactly
// like host tensors: a two-layer MLP's forward, backward, gradient norm and
// AdamW step on the vulkan backend (lavapipe in CI) equal the cpu backend's;
// host-only operations on a device tensor, and a tensor on the wrong side of
// a kernel, are errors naming the device; the bytes moved are counted.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "backend/device_tensor.h"
#include "backend/ops.h"
#include "core/error.h"
#include "core/rng.h"

using namespace keel;
using backend::Backend;

namespace {

std::unique_ptr<Backend> vulkan(std::string* why) {
  try {
    return backend::make_backend("vulkan");
  } catch (const Error& e) {
    *why = e.what();
    return nullptr;
  }
}

Tensor randn(const Shape& s, float scale, uint64_t seed) {
  Tensor t = Tensor::zeros(s, DType::F32);
  Rng(seed, 7).fill_normal(t.data<float>(), t.numel(), scale);
  return t;
}

struct Step {
  Tensor losses, W1, m1, v1, dW2, db1;
  double grad_norm2 = 0;
};

constexpr int64_t B = 16, D = 33, H = 64, V = 17;

// One training step of y = W2 gelu(W1 x + b1) with cross-entropy, on `be`
// with every tensor in be's memory; results are copied back to the host.
Step mlp_step(Backend& be) {
  auto dev = [&](const Tensor& t) { return backend::to_device(be, t); };
  auto make = [&](const Shape& s) { return backend::empty_on(be, s, DType::F32); };
  std::vector<int32_t> tg(B);
  for (int64_t i = 0; i < B; ++i) tg[size_t(i)] = int32_t((i * 7) % V);
  tg[3] = -1;  // an ignored row
  const Tensor x = dev(randn({B, D}, 1.f, 1)), targets = dev(Tensor::from_i32(tg, Shape{B}));
  Tensor W1 = dev(randn({H, D}, 0.2f, 2)), b1 = dev(randn({H}, 0.1f, 3));
  const Tensor W2 = dev(randn({V, H}, 0.2f, 4));
  Tensor h = make({B, H}), a = make({B, H}), logits = make({B, V});
  Tensor losses = make({B}), lse = make({B});
  ops::matmul(be, x, false, W1, true, h);
  ops::bias_add(be, h, b1);
  ops::gelu_forward(be, h, a);
  ops::matmul(be, a, false, W2, true, logits);
  ops::cross_entropy_forward(be, logits, targets, losses, lse);

  Tensor dloss = dev(Tensor::from_f32(std::vector<float>(B, 1.f / B), Shape{B}));
  Tensor dlogits = make({B, V}), dW2 = make({V, H}), da = make({B, H}), dh = make({B, H});
  Tensor db1 = make({H}), dW1 = make({H, D});
  ops::cross_entropy_backward(be, logits, targets, lse, dloss, dlogits);
  ops::matmul(be, dlogits, true, a, false, dW2);
  ops::matmul(be, dlogits, false, W2, false, da);
  ops::gelu_backward(be, h, da, dh);
  ops::bias_backward(be, dh, db1);
  ops::matmul(be, dh, true, x, false, dW1);

  Step s;
  s.grad_norm2 = ops::sum_squares(be, dW1);
  Tensor m1 = make({H, D}), v1 = make({H, D}), none;
  backend::AdamWArgs args;
  args.n = H * D;
  args.lr = 1e-2f;
  args.weight_decay = 0.1f;
  ops::adamw_update(be, args, W1, dW1, m1, v1, none);
  s.losses = backend::to_host(be, losses);
  s.W1 = backend::to_host(be, W1);
  s.m1 = backend::to_host(be, m1);
  s.v1 = backend::to_host(be, v1);
  s.dW2 = backend::to_host(be, dW2);
  s.db1 = backend::to_host(be, db1);
  return s;
}

void expect_close(const Tensor& got, const Tensor& want, double rel, const char* what) {
  ASSERT_TRUE(got.on_host());
  const auto g = got.to_f32_vector(), w = want.to_f32_vector();
  ASSERT_EQ(g.size(), w.size()) << what;
  double scale = 0;
  for (float v : w) scale = std::max(scale, double(std::fabs(v)));
  for (size_t i = 0; i < g.size(); ++i)
    ASSERT_NEAR(g[i], w[i], rel * (scale + 1e-30)) << what << "[" << i << "]";
}

}  // namespace

TEST(DeviceTensor, MlpStepOnVulkanEqualsCpu) {
  std::string why;
  auto vk = vulkan(&why);
  if (!vk) GTEST_SKIP() << "no vulkan backend: " << why;
  auto cpu = backend::make_backend("cpu");
  const Step want = mlp_step(*cpu);
  const auto before = vk->transfer_stats();
  const Step got = mlp_step(*vk);
  const auto moved = vk->transfer_stats();
  expect_close(got.losses, want.losses, 1e-5, "losses");
  expect_close(got.dW2, want.dW2, 1e-5, "dW2");
  expect_close(got.db1, want.db1, 1e-5, "db1");
  expect_close(got.m1, want.m1, 1e-5, "m1");
  expect_close(got.v1, want.v1, 1e-5, "v1");
  expect_close(got.W1, want.W1, 1e-5, "W1");
  EXPECT_NEAR(got.grad_norm2, want.grad_norm2, 1e-5 * want.grad_norm2);
  EXPECT_EQ(got.losses.to_f32_vector()[3], 0.f) << "ignored row";
  // Uploads: x, targets, W1, b1, W2, dloss; downloads: the six results and
  // the 8-byte gradient norm. Nothing else crosses.
  const uint64_t up = 4 * (B * D + B + H * D + H + V * H + B);
  const uint64_t down = 4 * (B + 3 * H * D + V * H + H) + 8;
  EXPECT_EQ(moved.bytes_to_device - before.bytes_to_device, up);
  EXPECT_EQ(moved.bytes_to_host - before.bytes_to_host, down);
  EXPECT_GT(moved.syncs, before.syncs);
}

TEST(DeviceTensor, MovesAreExplicit) {
  std::string why;
  auto vk = vulkan(&why);
  if (!vk) GTEST_SKIP() << "no vulkan backend: " << why;
  auto cpu = backend::make_backend("cpu");
  const Tensor host = randn({4, 8}, 1.f, 9);
  Tensor d = backend::to_device(*vk, host, "weights");
  EXPECT_FALSE(d.on_host());
  EXPECT_EQ(d.device_name(), "vulkan");
  EXPECT_EQ(d.desc(), "f32[4, 8] on vulkan");
  // Host-only operations refuse, naming where the bytes are.
  try {
    (void)d.to_f32_vector();
    FAIL() << "to_f32_vector of a device tensor";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("live on vulkan"), std::string::npos) << e.what();
  }
  EXPECT_THROW((void)d.clone(), Error);
  EXPECT_THROW(d.fill_zero(), Error);
  // A host tensor handed to a vulkan kernel, or a vulkan tensor to cpu's.
  Tensor out = backend::empty_on(*vk, {4, 8}, DType::F32);
  try {
    ops::add(*vk, host, d, out);
    FAIL() << "host tensor accepted by the vulkan backend";
  } catch (const KernelError& e) {
    EXPECT_NE(std::string(e.what()).find("a lives on host but backend vulkan"), std::string::npos)
        << e.what();
  }
  Tensor hout = Tensor::zeros({4, 8}, DType::F32);
  EXPECT_THROW(ops::add(*cpu, host, d, hout), KernelError);
  // The round trip is exact, and host backends move nothing.
  ops::add(*vk, d, d, out);
  const auto twice = backend::to_host(*vk, out).to_f32_vector(), h = host.to_f32_vector();
  for (size_t i = 0; i < h.size(); ++i) EXPECT_EQ(twice[i], h[i] + h[i]);
  EXPECT_EQ(backend::to_device(*cpu, host).raw(), host.raw());
  // fill_zero through the backend, including a range not a whole word.
  vk->fill_zero(out.raw(), out.nbytes());
  for (float v : backend::to_host(*vk, out).to_f32_vector()) EXPECT_EQ(v, 0.f);
  Tensor b16 = backend::to_device(*vk, host.to(DType::BF16));
  vk->fill_zero(static_cast<char*>(b16.raw()) + 2, 6);
  const auto z = backend::to_host(*vk, b16).to_f32_vector(),
             hb = host.to(DType::BF16).to_f32_vector();
  EXPECT_EQ(z[0], hb[0]);
  EXPECT_EQ(z[1], 0.f);
  EXPECT_EQ(z[3], 0.f);
  EXPECT_EQ(z[4], hb[4]);
}
