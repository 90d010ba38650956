// FlatStage: whole-model vectors between a backend's tensors and the host.
// On the cpu backend it is plain memcpy (nothing is counted as moved); on a
// device (vulkan, lavapipe in CI) the same bytes arrive with one host wait
// for a download, undefined tensors (released ZeRO-1 moments) leave their
// slices alone, and a subset of parameters (a rank's shard) lands in place.
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "backend/device_tensor.h"
#include "core/error.h"
#include "dist/flat_params.h"

using namespace keel;
using backend::Backend;

namespace {

struct Params {
  std::vector<nn::Parameter> store;
  std::vector<nn::Parameter*> ptrs;
  std::vector<Tensor> moments;
  Params(Backend& be, const std::vector<int64_t>& sizes) {
    store.resize(sizes.size());
    for (size_t i = 0; i < sizes.size(); ++i) {
      store[i].value = backend::empty_on(be, Shape{sizes[i]}, DType::F32);
      store[i].grad = backend::empty_on(be, Shape{sizes[i]}, DType::F32);
      moments.push_back(backend::empty_on(be, Shape{sizes[i]}, DType::F32));
      ptrs.push_back(&store[i]);
    }
  }
};

std::vector<float> iota_vec(size_t n, float base) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = base + float(i);
  return v;
}

void round_trip(Backend& be) {
  // 20000 floats: more than one inline upload's 64 KiB, so staging is real.
  Params ps(be, {3, 20000, 1, 257});
  const size_t n = 3 + 20000 + 1 + 257;
  dist::FlatStage stage(be);
  const std::vector<float> in = iota_vec(n, 0.5f);
  stage.from_host(in, ps.ptrs, &nn::Parameter::grad);
  std::vector<float> out(n, -1.f);
  const auto s0 = be.transfer_stats();
  stage.to_host(ps.ptrs, &nn::Parameter::grad, out);
  if (!be.host_memory()) {
    EXPECT_EQ(be.transfer_stats().syncs - s0.syncs, 1u);
  }
  EXPECT_EQ(out, in);
  // Values are untouched by a gradient transfer.
  std::vector<float> vals(n, -1.f);
  stage.to_host(ps.ptrs, &nn::Parameter::value, vals);
  EXPECT_EQ(vals, std::vector<float>(n, 0.f));

  // A released moment leaves its slice as it was.
  stage.from_host(in, ps.ptrs, ps.moments);
  ps.moments[1] = Tensor();
  std::vector<float> mom(n, 7.f);
  stage.to_host(ps.ptrs, ps.moments, mom);
  for (size_t j = 0; j < n; ++j) {
    const bool released = j >= 3 && j < 3 + 20000;
    ASSERT_EQ(mom[j], released ? 7.f : in[j]) << j;
  }

  // A shard: parameters 2 and 3 only, end to end from offset 0.
  const std::vector<size_t> shard = {2, 3};
  const std::vector<float> part = iota_vec(258, 100.f);
  auto value = [&](size_t i) -> const Tensor& { return ps.ptrs[i]->value; };
  stage.from_host(part, ps.ptrs, shard, value);
  std::vector<float> back(258);
  stage.to_host(ps.ptrs, shard, value, back);
  EXPECT_EQ(back, part);
  stage.to_host(ps.ptrs, &nn::Parameter::value, vals);
  EXPECT_EQ(vals[0], 0.f);
  EXPECT_EQ(vals[3 + 20000], 100.f);
  EXPECT_EQ(vals[n - 1], 100.f + 257.f);

  std::vector<float> wrong(n - 1);
  EXPECT_THROW(stage.to_host(ps.ptrs, &nn::Parameter::grad, wrong), DistError);
}

}  // namespace

TEST(FlatStage, CpuIsMemcpy) {
  auto cpu = backend::make_backend("cpu");
  round_trip(*cpu);
  const auto s = cpu->transfer_stats();
  EXPECT_EQ(s.syncs + s.bytes_to_device + s.bytes_to_host, 0u);
}

TEST(FlatStage, VulkanOneWaitPerDownload) {
  std::unique_ptr<Backend> vk;
  try {
    vk = backend::make_backend("vulkan");
  } catch (const Error& e) {
    GTEST_SKIP() << "no vulkan backend: " << e.what();
  }
  round_trip(*vk);
}
