// Sampling (repetition penalty, per-request seeds) and streamed text
// (UTF-8 hold-back, stop strings across token boundaries).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <iterator>
#include <vector>

#include "serve/sampler.h"
#include "serve/text_stream.h"

using namespace keel::serve;

TEST(Sampling, RepetitionPenaltyDividesPositiveAndMultipliesNegative) {
  std::vector<float> l = {2.f, -2.f, 1.f, 4.f};
  const std::vector<int32_t> seen = {0, 1, 1, 1};
  apply_repetition_penalty(l, seen, 2.0);
  EXPECT_EQ(l, (std::vector<float>{1.f, -4.f, 1.f, 4.f}));  // each id once
  apply_repetition_penalty(l, seen, 1.0);
  EXPECT_EQ(l, (std::vector<float>{1.f, -4.f, 1.f, 4.f}));
}

TEST(Sampling, PresenceAndFrequencyPenaltiesCountOnlyTheOutput) {
  std::vector<float> l = {1.f, 1.f, 1.f, 1.f};
  const std::vector<int32_t> generated = {2, 0, 2, 2};
  apply_presence_frequency(l, generated, 0.5, 0.25);
  // id 0: once -> 1 - 0.25 - 0.5; id 2: three times -> 1 - 0.75 - 0.5; 1, 3: untouched.
  EXPECT_EQ(l, (std::vector<float>{0.25f, 1.f, -0.25f, 1.f}));
  // sample_next: the prompt (the first seen.size() - index ids) is not penalised.
  SamplingParams p;
  p.temperature = 0;
  p.presence_penalty = 1.0;
  std::vector<float> logits = {3.f, 2.5f, 2.2f};
  const std::vector<int32_t> seen = {0, 0, 1};    // prompt {0, 0}, output {1}
  EXPECT_EQ(sample_next(logits, seen, p, 1), 0);  // 0 is only in the prompt: 3 vs 1.5 vs 2.2
  logits = {3.f, 2.5f, 2.2f};
  EXPECT_EQ(sample_next(logits, seen, p, 2), 2);  // output {0, 1}: 2 vs 1.5 vs 2.2
}

TEST(Sampling, TokenLogprobIsTheLogSoftmaxWithSortedAlternatives) {
  const std::vector<float> l = {1.f, 3.f, 3.f, 0.f};
  const double lse = std::log(std::exp(1.0) + 2 * std::exp(3.0) + std::exp(0.0));
  const TokenLogprob t = token_logprob(l, 0, 3);
  EXPECT_EQ(t.id, 0);
  EXPECT_NEAR(t.logprob, 1.0 - lse, 1e-6);
  ASSERT_EQ(t.top.size(), 3u);
  EXPECT_EQ(t.top[0].first, 1);  // a tie goes to the smaller id
  EXPECT_EQ(t.top[1].first, 2);
  EXPECT_EQ(t.top[2].first, 0);
  EXPECT_NEAR(t.top[0].second, 3.0 - lse, 1e-6);
  EXPECT_TRUE(token_logprob(l, 3, 0).top.empty());
}

TEST(Sampling, GreedyHonoursPenaltyAndSeedsReproduce) {
  SamplingParams p;
  p.temperature = 0;
  std::vector<float> l = {3.f, 2.9f, 0.f};
  EXPECT_EQ(sample_next(l, {}, p, 0), 0);
  p.repetition_penalty = 1.5;
  l = {3.f, 2.9f, 0.f};
  const std::vector<int32_t> seen = {0};
  EXPECT_EQ(sample_next(l, seen, p, 0), 1);  // 3 / 1.5 = 2 < 2.9

  p = {};
  p.temperature = 1.0;
  std::vector<int32_t> a, b, c;
  for (uint64_t i = 0; i < 64; ++i) {
    std::vector<float> flat(50, 0.f);
    p.seed = 1;
    a.push_back(sample_next(flat, {}, p, i));
    b.push_back(sample_next(flat, {}, p, i));
    p.seed = 2;
    c.push_back(sample_next(flat, {}, p, i));
  }
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
}

TEST(TextStream, HoldsBackSplitUtf8Characters) {
  TextStream s;
  const std::string e_acute = "\xc3\xa9", kanji = "\xe6\x97\xa5";
  EXPECT_EQ(s.push("h\xc3"), "h");
  EXPECT_EQ(s.push("\xa9"), e_acute);
  EXPECT_EQ(s.push("\xe6"), "");
  EXPECT_EQ(s.push("\x97"), "");
  EXPECT_EQ(s.push("\xa4!"), "\xe6\x97\xa4!");
  EXPECT_EQ(s.push(kanji.substr(0, 2)), "");
  EXPECT_EQ(s.flush(), "\xef\xbf\xbd\xef\xbf\xbd");  // cut short: replaced, not raw bytes
  // A byte that can never start a character is replaced at once.
  EXPECT_EQ(s.push("\xff"
                   "a"),
            "\xef\xbf\xbd"
            "a");
}

TEST(TextStream, StopStringAcrossTokens) {
  TextStream s({"###", "END"});
  EXPECT_EQ(s.push("hello #"), "hello ");
  EXPECT_EQ(s.push("# wor"), "## wor");  // "## " cannot become "###"
  EXPECT_EQ(s.push("ld E"), "ld ");
  EXPECT_EQ(s.push("N"), "");
  EXPECT_FALSE(s.stopped());
  EXPECT_EQ(s.push("Dtail"), "");
  EXPECT_TRUE(s.stopped());
  EXPECT_EQ(s.push("more"), "");
  EXPECT_EQ(s.flush(), "");

  TextStream t({"ab"});
  EXPECT_EQ(t.push("xa"), "x");
  EXPECT_EQ(t.flush(), "a");  // the output ended without the stop string

  TextStream u({"b"});
  EXPECT_EQ(u.push("aab c"), "aa");
  EXPECT_TRUE(u.stopped());
}

TEST(TextStream, Utf8Helpers) {
  EXPECT_EQ(utf8_complete_prefix("ab\xc3"), 2u);
  EXPECT_EQ(utf8_complete_prefix("ab\xc3\xa9"), 4u);
  EXPECT_EQ(utf8_complete_prefix("\xf0\x9f\x98"), 0u);
  EXPECT_EQ(utf8_complete_prefix("a\xe0\x80"), 3u);  // overlong lead pair: invalid, not held
  EXPECT_EQ(utf8_sanitize("ok\xed\xa0\x80"), "ok\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
  EXPECT_EQ(utf8_sanitize("\xf0\x9f\x98\x80"), "\xf0\x9f\x98\x80");
}

TEST(Sampling, GreedyAndCuts) {
  const std::vector<float> logits = {1.f, 3.f, 2.f, 3.f, -1.f};
  SamplingParams g;
  g.temperature = 0;
  EXPECT_EQ(sample_token(logits, g, 0.99), 1);  // ties go to the smaller id
  SamplingParams k1;
  k1.top_k = 1;
  for (double u : {0.0, 0.5, 0.999}) EXPECT_EQ(sample_token(logits, k1, u), 1);
  SamplingParams p;
  p.temperature = 1;
  p.top_p = 1e-6;  // the nucleus holds only the most likely token
  EXPECT_EQ(sample_token(logits, p, 0.9), 1);
  SamplingParams k2;
  k2.temperature = 1;
  k2.top_k = 2;  // only ids 1 and 3 (equal logits): half of u each
  EXPECT_EQ(sample_token(logits, k2, 0.25), 1);
  EXPECT_EQ(sample_token(logits, k2, 0.75), 3);
}

// Greedy picks std::max_element's id (the first of the largest; a NaN at id
// 0 wins, any other NaN never does) for every length around the eight-wide
// chains, ties placed anywhere, and signed zeros, infinities and NaNs.
TEST(Sampling, GreedyIsMaxElement) {
  SamplingParams g;
  g.temperature = 0;
  uint32_t r = 7;
  const auto next = [&] { return (r = r * 1664525u + 1013904223u) >> 8; };
  const float specials[] = {0.f, -0.f, INFINITY, -INFINITY, NAN, 3.f};
  for (size_t n = 1; n <= 40; ++n)
    for (int trial = 0; trial < 50; ++trial) {
      std::vector<float> l(n);
      for (float& v : l) v = float(next() % 7) - 3.f;  // many ties
      if (trial % 2)
        for (int k = 0; k < 3; ++k) l[next() % n] = specials[next() % std::size(specials)];
      const int32_t want = int32_t(std::max_element(l.begin(), l.end()) - l.begin());
      EXPECT_EQ(sample_token(l, g, 0.5), want) << "n=" << n << " trial=" << trial;
    }
  const std::vector<float> all_nan(9, NAN), ninf(9, -INFINITY);
  EXPECT_EQ(sample_token(all_nan, g, 0.5), 0);
  EXPECT_EQ(sample_token(ninf, g, 0.5), 0);
}

TEST(Sampling, FrequenciesFollowTheSoftmax) {
  const std::vector<float> logits = {0.f, 1.f, 2.f};
  SamplingParams o;
  o.temperature = 2.0;
  std::vector<int> counts(3, 0);
  const int n = 10000;
  for (int i = 0; i < n; ++i) ++counts[sample_token(logits, o, (i + 0.5) / n)];
  double z = 0;
  for (float l : logits) z += std::exp(l / 2.0);
  for (int j = 0; j < 3; ++j)
    EXPECT_NEAR(counts[j] / double(n), std::exp(logits[j] / 2.0) / z, 2.0 / n) << j;
}
