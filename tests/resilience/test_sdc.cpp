// Replica hash check: the vote finds the odd rank when a strict majority
// agrees and refuses to guess otherwise; the parameter hash sees any single
// flipped bit and nothing else.
#include <gtest/gtest.h>

#include <memory>

#include "backend/backend.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "resilience/fault_injector.h"
#include "resilience/sdc_check.h"
#include "train/adamw.h"

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

// The seal taken inside the update (AdamW::digest_moments) is moments_hash of
// the moments as the update read them and as it left them, for tensors of one
// piece and of several with a tail, on any thread count and for a ZeRO-1 shard.
TEST(SdcHash, UpdateDigestsEqualTheMomentsHash) {
  for (int threads : {1, 3}) {
    auto be = backend::make_backend("cpu");
    be->set_threads(threads);
    ASSERT_TRUE(be->digests_moments());
    std::vector<std::unique_ptr<nn::Parameter>> ps;
    const Rng rng(9, 0);
    const int64_t sizes[] = {5, 70001, 3 * 65536 + 17};
    const char* names[] = {"a", "b", "c"};
    for (int k = 0; k < 3; ++k) {
      const int64_t n = sizes[k];
      auto p = std::make_unique<nn::Parameter>();
      p->name = names[k];
      p->value = Tensor::zeros(Shape{n}, DType::F32);
      p->grad = Tensor::zeros(Shape{n}, DType::F32);
      rng.fill_normal(p->value.data<float>(), n, 1.f, 0);
      rng.fill_normal(p->grad.data<float>(), n, 1.f, uint64_t(n));
      ps.push_back(std::move(p));
    }
    std::vector<nn::Parameter*> ptrs;
    for (auto& p : ps) ptrs.push_back(p.get());
    train::AdamW opt(*be, ptrs, train::AdamWConfig{});
    opt.step(1e-3, 1.f);  // moments no longer zero
    EXPECT_FALSE(opt.moment_digests_valid());
    opt.digest_moments(true);
    for (auto shard : {std::pair<size_t, size_t>{0, 3}, std::pair<size_t, size_t>{1, 3}}) {
      opt.set_shard(shard.first, shard.second);
      const uint64_t before = moments_hash(opt);
      opt.step(1e-3, 0.5f);
      ASSERT_TRUE(opt.moment_digests_valid());
      EXPECT_EQ(opt.moments_digest_before(), before) << threads << " threads";
      EXPECT_EQ(opt.moments_digest_after(), moments_hash(opt)) << threads << " threads";
      EXPECT_NE(opt.moments_digest_after(), before);
    }
  }
  // A backend that cannot says so, and the optimizer then has no digests.
  auto ref = backend::make_backend("ref");
  EXPECT_FALSE(ref->digests_moments());
}
