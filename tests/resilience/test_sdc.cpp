// Replica hash check: the vote finds the odd rank when a strict majority
// agrees and refuses to guess otherwise; the parameter hash sees any single
// flipped bit and nothing else.
#include <gtest/gtest.h>

#include <memory>

#include "core/rng.h"
#include "core/tensor.h"
#include "resilience/fault_injector.h"
#include "resilience/sdc_check.h"

using namespace keel;
using namespace keel::resilience;

namespace {

std::vector<std::unique_ptr<nn::Parameter>> make_params(uint64_t seed) {
  std::vector<std::unique_ptr<nn::Parameter>> ps;
  for (int k = 0; k < 3; ++k) {
    auto p = std::make_unique<nn::Parameter>();
    p->name = "layer." + std::to_string(k) + ".weight";
    p->value = Tensor::zeros({int64_t(5 + k), 7}, DType::F32);
    Rng(seed, uint64_t(k)).fill_normal(p->value.data<float>(), p->value.numel(), 0.02f);
    ps.push_back(std::move(p));
  }
  return ps;
}

std::vector<nn::Parameter*> ptrs(const std::vector<std::unique_ptr<nn::Parameter>>& ps) {
  std::vector<nn::Parameter*> out;
  for (auto& p : ps) out.push_back(p.get());
  return out;
}

}  // namespace

TEST(SdcVote, MajorityFindsOddRank) {
  SdcVerdict v = sdc_vote({7, 7, 7});
  EXPECT_TRUE(v.ok);
  EXPECT_TRUE(v.odd_ranks.empty());
  v = sdc_vote({7, 9, 7});
  EXPECT_FALSE(v.ok);
  ASSERT_TRUE(v.has_majority);
  EXPECT_EQ(v.majority, 7u);
  EXPECT_EQ(v.odd_ranks, std::vector<int>{1});
  v = sdc_vote({1, 2, 2, 2, 3});
  EXPECT_EQ(v.odd_ranks, (std::vector<int>{0, 4}));
}

TEST(SdcVote, NoMajorityNoBlame) {
  for (const auto& h : {std::vector<uint64_t>{1, 2}, std::vector<uint64_t>{1, 1, 2, 2},
                        std::vector<uint64_t>{1, 2, 3}}) {
    const SdcVerdict v = sdc_vote(h);
    EXPECT_FALSE(v.ok);
    EXPECT_FALSE(v.has_majority);
    EXPECT_TRUE(v.odd_ranks.empty());
  }
  EXPECT_TRUE(sdc_vote({5}).ok);
}

TEST(SdcHash, EqualReplicasEqualHashAnyBitFlipDiffers) {
  auto a = make_params(11), b = make_params(11);
  const uint64_t h = parameters_hash(ptrs(a));
  EXPECT_EQ(h, parameters_hash(ptrs(b)));
  EXPECT_NE(h, parameters_hash(ptrs(make_params(12))));
  const Rng pick(5, 0);
  for (int t = 0; t < 64; ++t) {
    nn::Parameter& p = *b[pick.below(uint64_t(3 * t), 3)];
    const int64_t i = int64_t(pick.below(uint64_t(3 * t + 1), uint64_t(p.numel())));
    const int bit = int(pick.below(uint64_t(3 * t + 2), 32));
    flip_f32_bit(p.value.data<float>(), i, bit);
    EXPECT_NE(parameters_hash(ptrs(b)), h) << p.name << "[" << i << "] bit " << bit;
    flip_f32_bit(p.value.data<float>(), i, bit);
    EXPECT_EQ(parameters_hash(ptrs(b)), h);
  }
  // The names are part of what is compared.
  b[0]->name = "renamed";
  EXPECT_NE(parameters_hash(ptrs(b)), h);
}

TEST(SdcCheck, GathersAndVotes) {
  auto a = make_params(1);
  const uint64_t h = parameters_hash(ptrs(a));
  // A three-rank world in which rank 2 holds different bits.
  const SdcVerdict v = sdc_check(ptrs(a), [&](uint64_t mine) {
    return std::vector<uint64_t>{mine, h, h ^ 1};
  });
  EXPECT_EQ(v.odd_ranks, std::vector<int>{2});
  EXPECT_TRUE(sdc_check(ptrs(a), nullptr).ok);
}
