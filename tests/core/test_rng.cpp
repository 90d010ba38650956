// Counter-based RNG: Philox4x32-10 known answers (Random123's test vectors),
// pure-function behaviour, and the statistics of each distribution.
#include <gtest/gtest.h>

#include <cmath>
#include <set>
#include <vector>

#include "core/rng.h"

namespace keel {
namespace {

TEST(Rng, PhiloxKnownAnswers) {
  // Random123 kat_vectors, philox4x32-10: counter words (c0, c1) are the
  // counter, (c2, c3) the stream, the key is the seed.
  using W = std::array<uint32_t, 4>;
  EXPECT_EQ(philox4x32(0, 0, 0), (W{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}));
  EXPECT_EQ(philox4x32(~0ull, ~0ull, ~0ull), (W{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}));
  EXPECT_EQ(philox4x32(0x299f31d0a4093822ull, 0x0370734413198a2eull, 0x85a308d3243f6a88ull),
            (W{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}));
}

TEST(Rng, SameKeySameValue) {
  Rng a(1, 2), b(1, 2);
  for (uint64_t i : {0ull, 1ull, 7ull, 1ull << 40}) {
    EXPECT_EQ(a.u64(i), b.u64(i));
    EXPECT_EQ(a.normal(i), b.normal(i));
    EXPECT_EQ(a.uniform(i), b.uniform(i));
    EXPECT_EQ(a.below(i, 1000), b.below(i, 1000));
  }
  // Order of draws does not matter: each is a function of its counter.
  float late = a.normal(99);
  for (uint64_t i = 0; i < 99; ++i) a.normal(i);
  EXPECT_EQ(a.normal(99), late);
}

TEST(Rng, DifferentStreamsSeedsAndCountersDiffer) {
  Rng a(1, 2), other_stream(1, 3), other_seed(2, 2);
  std::set<uint64_t> seen;
  for (uint64_t i = 0; i < 1000; ++i) {
    EXPECT_NE(a.u64(i), other_stream.u64(i));
    EXPECT_NE(a.u64(i), other_seed.u64(i));
    seen.insert(a.u64(i));
  }
  EXPECT_EQ(seen.size(), 1000u);
  // Streams a few apart in the high word too.
  EXPECT_NE(Rng(1, 1ull << 32).u64(0), Rng(1, 0).u64(0));
}

TEST(Rng, UniformInRangeWithMeanOneHalf) {
  Rng r(11, 0);
  double sum = 0;
  const int n = 100000;
  for (int i = 0; i < n; ++i) {
    float u = r.uniform(uint64_t(i));
    ASSERT_GE(u, 0.f);
    ASSERT_LT(u, 1.f);
    sum += u;
  }
  // sd of the mean: sqrt(1/12 / n) = 9e-4; allow 5 sd.
  EXPECT_NEAR(sum / n, 0.5, 5 * 9.2e-4);
}

TEST(Rng, NormalMeanAndVariance) {
  Rng r(5, 9);
  const int n = 100000;
  double s = 0, s2 = 0, s4 = 0;
  for (int i = 0; i < n; ++i) {
    double x = r.normal(uint64_t(i));
    ASSERT_TRUE(std::isfinite(x));
    s += x, s2 += x * x, s4 += x * x * x * x;
  }
  double mean = s / n, var = s2 / n - mean * mean;
  // sd of the mean 1/sqrt(n) = 3.2e-3, of the variance sqrt(2/n) = 4.5e-3: 5 sd each.
  EXPECT_NEAR(mean, 0.0, 0.016);
  EXPECT_NEAR(var, 1.0, 0.023);
  EXPECT_NEAR(s4 / n, 3.0, 0.15);  // fourth moment of a normal: tails are right
}

TEST(Rng, BelowInRangeAndUniform) {
  Rng r(3, 4);
  for (uint64_t n : {1ull, 2ull, 3ull, 1000ull, (1ull << 40) + 7}) {
    for (uint64_t i = 0; i < 2000; ++i) ASSERT_LT(r.below(i, n), n);
  }
  // Chi-square over 7 buckets, 70000 draws: 6 degrees of freedom, p = 1e-4 at 27.9.
  const int k = 7, n = 70000;
  std::vector<int> count(k, 0);
  for (int i = 0; i < n; ++i) ++count[r.below(uint64_t(i), k)];
  double chi2 = 0, expect = double(n) / k;
  for (int c : count) chi2 += (c - expect) * (c - expect) / expect;
  EXPECT_LT(chi2, 27.9);
}

TEST(Rng, FillsMatchSingleDraws) {
  Rng r(8, 1);
  std::vector<float> v(37);
  r.fill_normal(v.data(), 37, 0.5f, 100);
  for (int k = 0; k < 37; ++k) EXPECT_EQ(v[k], r.normal(100 + k) * 0.5f);
  r.fill_uniform(v.data(), 37, -2.f, 3.f, 5);
  for (int k = 0; k < 37; ++k) {
    EXPECT_EQ(v[k], -2.f + 5.f * r.uniform(5 + k));
    EXPECT_GE(v[k], -2.f);
    EXPECT_LT(v[k], 3.f);
  }
}

}  // namespace
}  // namespace keel
