// f32 <-> bf16 / f16 conversions against independent oracles: the CPU's own
// F16C instructions for f16, a nearest-value search in double for bf16;
// exhaustive over the 65536 16-bit patterns, plus every rounding midpoint.
#include <gtest/gtest.h>
#include <immintrin.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "core/cpu_features.h"
#include "core/dtype.h"
#include "core/error.h"
#include "core/rng.h"

namespace keel {
namespace {

uint32_t bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

__attribute__((target("f16c"))) uint16_t hw_f32_to_f16(float f) {
  return uint16_t(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT));
}
__attribute__((target("f16c"))) float hw_f16_to_f32(uint16_t h) {
  return _cvtsh_ss(h);
}

// Round-to-nearest-even to bf16 by comparing distances in double: the two
// candidates are the truncation and the next pattern up in magnitude.
uint16_t oracle_bf16(float f) {
  uint32_t u = bits(f);
  uint16_t lo = uint16_t(u >> 16), hi = uint16_t(lo + 1);
  double x = f, a = bf16_to_f32(lo), b = bf16_to_f32(hi);
  double da = std::fabs(x - a), db = std::fabs(b - x);
  if (std::isinf(b)) db = std::fabs(std::ldexp(1.0, 128) * (b > 0 ? 1 : -1) - x);
  if (da < db) return lo;
  if (db < da) return hi;
  return (lo & 1) ? hi : lo;
}

TEST(Dtype, F16ToF32ExhaustiveAgainstF16C) {
  if (!cpu_features().f16c) GTEST_SKIP() << "no F16C on this CPU";
  for (uint32_t h = 0; h < 65536; ++h) {
    float a = f16_to_f32(uint16_t(h)), b = hw_f16_to_f32(uint16_t(h));
    if (std::isnan(b)) {
      ASSERT_TRUE(std::isnan(a)) << std::hex << h;
      ASSERT_EQ(std::signbit(a), std::signbit(b)) << std::hex << h;
    } else {
      ASSERT_EQ(bits(a), bits(b)) << "f16 pattern 0x" << std::hex << h;
    }
  }
}

TEST(Dtype, F16RoundTripExhaustive) {
  for (uint32_t h = 0; h < 65536; ++h) {
    float f = f16_to_f32(uint16_t(h));
    uint16_t back = f32_to_f16(f);
    if (std::isnan(f)) {
      ASSERT_TRUE(std::isnan(f16_to_f32(back))) << std::hex << h;
    } else {
      ASSERT_EQ(back, h) << "f16 pattern 0x" << std::hex << h;
    }
  }
}

TEST(Dtype, F32ToF16AtEveryMidpointAgainstF16C) {
  if (!cpu_features().f16c) GTEST_SKIP() << "no F16C on this CPU";
  // Midpoints between neighbouring f16 values (exact in f32: 12 significant
  // bits), and the f32 values either side of each, for both signs,
  // including subnormals and the overflow threshold past 65504.
  for (uint32_t h = 0; h < 0x7c00; ++h) {
    for (float sign : {1.f, -1.f}) {
      double a = f16_to_f32(uint16_t(h));
      double b = h + 1 == 0x7c00 ? 65536.0 : f16_to_f32(uint16_t(h + 1));
      float mid = float((a + b) / 2);
      ASSERT_EQ(double(mid), (a + b) / 2);
      for (float f : {mid, std::nextafter(mid, 0.f), std::nextafter(mid, INFINITY), float(a)}) {
        f *= sign;
        ASSERT_EQ(f32_to_f16(f), hw_f32_to_f16(f)) << "f32 0x" << std::hex << bits(f);
      }
    }
  }
}

TEST(Dtype, F32ToF16RandomPatternsAgainstF16C) {
  if (!cpu_features().f16c) GTEST_SKIP() << "no F16C on this CPU";
  Rng rng(7, 0);
  for (uint64_t i = 0; i < 2000000; ++i) {
    float f = from_bits(uint32_t(rng.u64(i)));
    uint16_t a = f32_to_f16(f), b = hw_f32_to_f16(f);
    if (std::isnan(f)) {
      ASSERT_TRUE(std::isnan(f16_to_f32(a)));
      ASSERT_EQ(a & 0x8000, b & 0x8000);
    } else {
      ASSERT_EQ(a, b) << "f32 0x" << std::hex << bits(f);
    }
  }
}

TEST(Dtype, F16Specials) {
  EXPECT_EQ(f32_to_f16(0.f), 0x0000);
  EXPECT_EQ(f32_to_f16(-0.f), 0x8000);
  EXPECT_EQ(f32_to_f16(INFINITY), 0x7c00);
  EXPECT_EQ(f32_to_f16(-INFINITY), 0xfc00);
  EXPECT_EQ(f32_to_f16(65504.f), 0x7bff);
  EXPECT_EQ(f32_to_f16(65519.f), 0x7bff);   // below the midpoint to 65536
  EXPECT_EQ(f32_to_f16(65520.f), 0x7c00);   // the midpoint ties to even: Inf
  EXPECT_EQ(f32_to_f16(0x1p-24f), 0x0001);  // smallest subnormal
  EXPECT_EQ(f32_to_f16(0x1p-25f), 0x0000);  // half of it ties to even: 0
  EXPECT_EQ(f32_to_f16(0x3p-25f), 0x0002);  // 1.5 ulp ties to even: 2 ulp
  EXPECT_EQ(f32_to_f16(1.f + 0x1p-11f), 0x3c00);
  EXPECT_EQ(f32_to_f16(1.f + 0x3p-11f), 0x3c02);
  EXPECT_TRUE(std::isnan(f16_to_f32(f32_to_f16(std::numeric_limits<float>::quiet_NaN()))));
  EXPECT_EQ(f16_to_f32(0x0001), 0x1p-24f);
  EXPECT_EQ(f16_to_f32(0x03ff), 0x3ffp-24f);  // largest subnormal
  EXPECT_EQ(f16_to_f32(0x0400), 0x1p-14f);    // smallest normal
}

TEST(Dtype, Bf16RoundTripExhaustive) {
  for (uint32_t h = 0; h < 65536; ++h) {
    float f = bf16_to_f32(uint16_t(h));
    EXPECT_EQ(bits(f), h << 16);
    uint16_t back = f32_to_bf16(f);
    if (std::isnan(f)) {
      ASSERT_TRUE(std::isnan(bf16_to_f32(back))) << std::hex << h;
      ASSERT_EQ(back & 0x8000, h & 0x8000);
    } else {
      ASSERT_EQ(back, h) << "bf16 pattern 0x" << std::hex << h;
    }
  }
}

TEST(Dtype, F32ToBf16AgainstNearestSearch) {
  // Every bf16 pattern as the high half, with low halves at the tie (0x8000),
  // either side of it, the extremes and a random one.
  Rng rng(3, 1);
  for (uint32_t hi = 0; hi < 65536; ++hi) {
    for (uint32_t lo :
         {0u, 1u, 0x7fffu, 0x8000u, 0x8001u, 0xfffeu, 0xffffu, uint32_t(rng.u64(hi)) & 0xffffu}) {
      float f = from_bits(hi << 16 | lo);
      uint16_t got = f32_to_bf16(f);
      if (std::isnan(f)) {
        ASSERT_TRUE(std::isnan(bf16_to_f32(got))) << std::hex << bits(f);
        ASSERT_NE(got & 0x0040, 0) << "NaN must come out quiet";
        continue;
      }
      ASSERT_EQ(got, oracle_bf16(f)) << "f32 0x" << std::hex << bits(f);
    }
  }
}

TEST(Dtype, Bf16Specials) {
  EXPECT_EQ(f32_to_bf16(1.f + 0x1p-8f), 0x3f80);                      // tie to even: down
  EXPECT_EQ(f32_to_bf16(1.f + 0x3p-8f), 0x3f82);                      // tie to even: up
  EXPECT_EQ(f32_to_bf16(std::numeric_limits<float>::max()), 0x7f80);  // rounds to Inf
  EXPECT_EQ(f32_to_bf16(-0.f), 0x8000);
  EXPECT_EQ(f32_to_bf16(1e-40f), f32_to_bf16(1e-40f));  // subnormal: stays finite
  EXPECT_TRUE(std::isfinite(bf16_to_f32(f32_to_bf16(1e-40f))));
  // A signalling NaN whose payload sits only in the low half must stay NaN.
  EXPECT_TRUE(std::isnan(bf16_to_f32(f32_to_bf16(from_bits(0x7f800001u)))));
}

TEST(Dtype, NamesAndSizes) {
  for (DType t :
       {DType::F32, DType::BF16, DType::F16, DType::I8, DType::I32, DType::Q4_0, DType::Q8_0})
    EXPECT_EQ(dtype_from_name(dtype_name(t)), t);
  try {
    dtype_from_name("fp8");
    FAIL() << "no error for an unknown dtype";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'fp8'"), std::string::npos);
  }
  EXPECT_EQ(dtype_bytes(DType::F32, 3), 12u);
  EXPECT_EQ(dtype_bytes(DType::BF16, 3), 6u);
  EXPECT_EQ(dtype_bytes(DType::I8, 3), 3u);
  EXPECT_EQ(dtype_bytes(DType::Q4_0, 64), 36u);
  EXPECT_EQ(dtype_bytes(DType::Q8_0, 96), 102u);
  EXPECT_THROW(dtype_bytes(DType::Q4_0, 33), Error);
  EXPECT_THROW(dtype_size(DType::Q8_0), Error);
  EXPECT_TRUE(dtype_is_blocked(DType::Q4_0));
  EXPECT_FALSE(dtype_is_blocked(DType::I8));
}

}  // namespace
}  // namespace keel
