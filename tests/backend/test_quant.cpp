// cpu quantization against llama.cpp's rules and an integer reference:
// Q4_0 bytes on a block worked out by hand, round-trip error bounds, qmatmul
// against exact integer dot products, every vector level against scalar, and
// agreement with the ref backend when it implements the kernels.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/gemm.h"
#include "backend/cpu/gemm_internal.h"
#include "backend/cpu/quant_internal.h"
#include "core/cpu_features.h"
#include "core/dtype.h"
#include "core/error.h"

namespace keel::backend::cpu {
namespace {

std::vector<float> randn(size_t n, uint32_t seed, float sd = 1.f) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.f, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

TEST(Quant, Q4_0BytesMatchLlamaRuleByHand) {
  // Largest magnitude is +8 (element 5; the -8 at 20 comes later and loses the
  // tie), so d = 8 / -8 = -1 and q = min(15, int(-w + 8.5)).
  float w[32];
  for (int j = 0; j < 32; ++j) w[j] = float(j % 8) - 4.f;  // -4..3
  w[5] = 8.f;
  w[20] = -8.f;
  w[7] = 0.49f;  // -0.49 + 8.5 = 8.01 -> 8
  w[9] = -0.5f;  //  0.5 + 8.5 = 9 -> 9
  w[30] = 7.6f;  // -7.6 + 8.5 = 0.9 -> 0
  BlockQ4_0 b;
  quantize(DType::Q4_0, w, &b, nullptr, 1, 32, 1);
  EXPECT_EQ(b.d, 0xBC00);  // f16(-1)
  uint8_t q[32];
  for (int j = 0; j < 32; ++j) q[j] = uint8_t(std::min(15, int(-w[j] + 8.5f)));
  // By hand for the special ones:
  EXPECT_EQ(q[5], 0);
  EXPECT_EQ(q[20], 15);  // 16.5 -> 16, clamped to 15
  EXPECT_EQ(q[7], 8);
  EXPECT_EQ(q[9], 9);
  EXPECT_EQ(q[30], 0);
  EXPECT_EQ(q[0], 12);  // w = -4
  EXPECT_EQ(q[3], 9);   // w = -1 -> 9.5 -> 9
  for (int j = 0; j < 16; ++j) EXPECT_EQ(b.qs[j], uint8_t(q[j] | (q[j + 16] << 4))) << "byte " << j;
}

TEST(Quant, ZeroRowsAndBlocks) {
  std::vector<float> w(64, 0.f), back(64, 1.f);
  std::vector<int8_t> q(64, 5);
  float s = 1.f;
  quantize(DType::I8, w.data(), q.data(), &s, 1, 64, 1);
  EXPECT_EQ(s, 0.f);
  for (int8_t v : q) EXPECT_EQ(v, 0);
  std::vector<BlockQ4_0> b4(2);
  quantize(DType::Q4_0, w.data(), b4.data(), nullptr, 1, 64, 1);
  dequantize(DType::Q4_0, b4.data(), nullptr, back.data(), 1, 64, 1);
  for (float v : back) EXPECT_EQ(v, 0.f);
}

TEST(Quant, RoundTripErrorBounds) {
  const int64_t N = 7, K = 96;
  auto w = randn(size_t(N * K), 1);
  w[3] = 5.f;  // an outlier
  std::vector<float> back(w.size());
  // I8: |w - w'| <= scale / 2 (plus f32 rounding).
  std::vector<int8_t> q(w.size());
  std::vector<float> s(N);
  quantize(DType::I8, w.data(), q.data(), s.data(), N, K, 2);
  dequantize(DType::I8, q.data(), s.data(), back.data(), N, K, 2);
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k)
      ASSERT_LE(std::fabs(w[n * K + k] - back[n * K + k]), s[n] * 0.5f * (1 + 1e-5f) + 1e-7f);
  // Q8_0: d/2 plus the f16 rounding of d (127 * 2^-11 relative).
  std::vector<BlockQ8_0> q8(size_t(N * K / 32));
  quantize(DType::Q8_0, w.data(), q8.data(), nullptr, N, K, 2);
  dequantize(DType::Q8_0, q8.data(), nullptr, back.data(), N, K, 2);
  for (size_t i = 0; i < w.size(); ++i) {
    const float d = f16_to_f32(q8[i / 32].d);
    ASSERT_LE(std::fabs(w[i] - back[i]), d * 0.57f + 1e-7f) << i;
  }
  // Q4_0: at most |d| (the clamp at 15 loses up to one step on the far side).
  std::vector<BlockQ4_0> q4(size_t(N * K / 32));
  quantize(DType::Q4_0, w.data(), q4.data(), nullptr, N, K, 2);
  dequantize(DType::Q4_0, q4.data(), nullptr, back.data(), N, K, 2);
  for (size_t i = 0; i < w.size(); ++i) {
    const float d = std::fabs(f16_to_f32(q4[i / 32].d));
    ASSERT_LE(std::fabs(w[i] - back[i]), d * 1.01f + 1e-7f) << i;
  }
}

// x as backend.h quantizes it for I8 weights: one scale for the row, which
// it returns, and the values in q.
float quantize_x_row(const float* xr, int64_t K, std::vector<int>& q) {
  float amax = 0;
  for (int64_t k = 0; k < K; ++k) amax = std::max(amax, std::fabs(xr[k]));
  const float sx = amax / 127.f;
  q.resize(size_t(K));
  for (int64_t k = 0; k < K; ++k) q[size_t(k)] = sx == 0 ? 0 : int(std::nearbyint(xr[k] / sx));
  return sx;
}

// Block b of x row xr as backend.h quantizes it for the blocked types: the
// values in q, divided by the f32 scale; returns the scale rounded to f16.
float quantize_x_block(const float* xr, int64_t b, int* q) {
  float amax = 0;
  for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(xr[b * 32 + j]));
  const float d = amax / 127.f;
  for (int j = 0; j < 32; ++j) q[j] = d == 0 ? 0 : int(std::nearbyint(xr[b * 32 + j] / d));
  return f16_to_f32(f32_to_f16(d));
}

// The exact dot of weight row n's block b (Q8_0 or Q4_0, decoded by hand)
// with the quantized x block xq; the block's widened scale in *dw.
int64_t weight_block_dot(DType qdt, const void* wq, int64_t n, int64_t K, int64_t b, const int* xq,
                         float* dw) {
  int64_t s = 0;
  for (int j = 0; j < 32; ++j) {
    int wv;
    if (qdt == DType::Q8_0) {
      const BlockQ8_0& blk = static_cast<const BlockQ8_0*>(wq)[n * K / 32 + b];
      wv = blk.qs[j];
      *dw = f16_to_f32(blk.d);
    } else {
      const BlockQ4_0& blk = static_cast<const BlockQ4_0*>(wq)[n * K / 32 + b];
      wv = (j < 16 ? (blk.qs[j] & 15) : (blk.qs[j - 16] >> 4)) - 8;
      *dw = f16_to_f32(blk.d);
    }
    s += int64_t(xq[j]) * wv;
  }
  return s;
}

// Independent reference: quantize x per the spec, exact int64 dots, double scaling.
std::vector<double> qmatmul_reference(DType qdt, const std::vector<float>& x, const void* wq,
                                      const float* ws, int64_t M, int64_t N, int64_t K) {
  std::vector<double> y(size_t(M * N));
  std::vector<int> xq;
  for (int64_t m = 0; m < M; ++m) {
    const float* xr = x.data() + m * K;
    if (qdt == DType::I8) {
      const float sx = quantize_x_row(xr, K, xq);
      for (int64_t n = 0; n < N; ++n) {
        int64_t acc = 0;
        for (int64_t k = 0; k < K; ++k)
          acc += int64_t(xq[size_t(k)]) * static_cast<const int8_t*>(wq)[n * K + k];
        y[m * N + n] = double(acc) * sx * ws[n];
      }
      continue;
    }
    for (int64_t n = 0; n < N; ++n) {
      double acc = 0;
      for (int64_t b = 0; b < K / 32; ++b) {
        int q[32];
        const double dx = quantize_x_block(xr, b, q);
        float dw;
        const int64_t s = weight_block_dot(qdt, wq, n, K, b, q, &dw);
        acc += double(s) * double(dw) * dx;
      }
      y[m * N + n] = acc;
    }
  }
  return y;
}

// y = x @ W^T through the packed layout (quant_internal.h) when the CPU has
// one, else through the plain qmatmul; returns whether it was packed.
bool packed_qmatmul(DType qdt, const float* x, const void* wq, const float* ws, float* y, int64_t M,
                    int64_t N, int64_t K, int threads) {
  const int64_t bytes = qpack_bytes(qdt, N, K);
  if (bytes == 0) {
    qmatmul(qdt, x, wq, ws, y, M, N, K, threads);
    return false;
  }
  std::vector<uint8_t> p(size_t(bytes), 0xAB);
  qpack(qdt, wq, ws, p.data(), N, K);
  qmatmul_packed(qdt, x, p.data(), y, M, N, K, threads);
  return true;
}

void check_qmatmul(DType qdt, int64_t M, int64_t N, int64_t K, bool packed = false) {
  auto w = randn(size_t(N * K), 2, 0.1f), x = randn(size_t(M * K), 3);
  std::vector<char> wq(dtype_bytes(qdt, size_t(N * K)));
  std::vector<float> ws(static_cast<size_t>(N));
  quantize(qdt, w.data(), wq.data(), ws.data(), N, K, 2);
  auto ref = qmatmul_reference(qdt, x, wq.data(), ws.data(), M, N, K);
  // Sentinels past the end catch a padded weight row written out.
  const float sentinel = 12345.f;
  std::vector<float> y1(size_t(M * N + 16), sentinel), y2(size_t(M * N + 16), sentinel);
  if (packed) {
    packed_qmatmul(qdt, x.data(), wq.data(), ws.data(), y1.data(), M, N, K, 1);
    packed_qmatmul(qdt, x.data(), wq.data(), ws.data(), y2.data(), M, N, K, 2);
  } else {
    qmatmul(qdt, x.data(), wq.data(), ws.data(), y1.data(), M, N, K, 1);
    qmatmul(qdt, x.data(), wq.data(), ws.data(), y2.data(), M, N, K, 2);
  }
  EXPECT_EQ(0, std::memcmp(y1.data(), y2.data(), y1.size() * 4)) << "threads 1 vs 2";
  for (size_t i = ref.size(); i < y1.size(); ++i) ASSERT_EQ(y1[i], sentinel) << "past the end";
  double mag = 0;
  for (double v : ref) mag = std::max(mag, std::fabs(v));
  for (size_t i = 0; i < ref.size(); ++i)
    ASSERT_NEAR(y1[i], ref[i], 1e-5 * mag + 1e-6 * std::fabs(ref[i]) * double(K / 32 + 1))
        << dtype_name(qdt) << (packed ? " packed" : "") << " M=" << M << " N=" << N << " K=" << K
        << " at " << i;
}

TEST(Quant, QmatmulMatchesIntegerReference) {
  for (DType qdt : {DType::I8, DType::Q8_0, DType::Q4_0}) {
    check_qmatmul(qdt, 1, 37, 64);
    check_qmatmul(qdt, 5, 19, 256);
    check_qmatmul(qdt, 3, 8, 32);
  }
  check_qmatmul(DType::I8, 4, 9, 77);  // I8 has no block constraint: odd K uses the tail
}

TEST(Quant, VectorLevelsMatchScalarBitForBit) {
  using namespace quant_detail;
  std::vector<const QDotTable*> tables;
  if (cpu_features().avx2) tables.push_back(&qdot_avx2());
  if (gemm_detail::allow_avx512()) tables.push_back(&qdot_avx512());
  if (tables.empty()) GTEST_SKIP() << "no vector level on this CPU";
  const int64_t K = 32 * 9 + 13, R = kQRows;
  std::mt19937 g(5);
  std::uniform_int_distribution<int> b8(-127, 127), b4(0, 255);
  std::vector<int8_t> a(K), b(size_t(R * K));
  for (auto& v : a) v = int8_t(b8(g));
  for (auto& v : b) v = int8_t(b8(g));
  a[0] = -127;
  b[0] = -127;
  const int64_t nb = 9;
  std::vector<BlockQ8_0> w8(nb), x8(size_t(R * nb));
  std::vector<BlockQ4_0> w4(nb);
  std::vector<float> xd(size_t(R * nb));
  for (int64_t i = 0; i < nb; ++i) {
    w8[i].d = f32_to_f16(0.01f * float(i + 1));
    w4[i].d = f32_to_f16(-0.03f * float(i + 1));
    for (int j = 0; j < 32; ++j) w8[i].qs[j] = int8_t(b8(g));
    for (int j = 0; j < 16; ++j) w4[i].qs[j] = uint8_t(b4(g));
  }
  for (int64_t i = 0; i < R * nb; ++i) {
    x8[i].d = f32_to_f16(0.02f * float(i % 7 + 2));
    xd[i] = f16_to_f32(x8[i].d);
    for (int j = 0; j < 32; ++j) x8[i].qs[j] = int8_t(b8(g));
  }
  const QDotTable& s = qdot_scalar();
  for (const QDotTable* t : tables) {
    for (int64_t k : {int64_t(0), int64_t(31), int64_t(32), K}) {
      for (int64_t M = 1; M <= R; ++M) {
        // x rows are K apart: the kernels read row m at x + m * k.
        int32_t vi[kQRows], si[kQRows];
        t->dot_i8(a.data(), b.data(), k, M, vi);
        s.dot_i8(a.data(), b.data(), k, M, si);
        for (int64_t m = 0; m < M; ++m) EXPECT_EQ(vi[m], si[m]) << "i8 k=" << k << " m=" << m;
      }
    }
    for (int64_t M = 1; M <= R; ++M) {
      float v8[kQRows], s8[kQRows], v4[kQRows], s4[kQRows], one[kQRows];
      t->dot_q8(w8.data(), x8.data(), xd.data(), nb, M, v8);
      s.dot_q8(w8.data(), x8.data(), xd.data(), nb, M, s8);
      t->dot_q4(w4.data(), x8.data(), xd.data(), nb, M, v4);
      s.dot_q4(w4.data(), x8.data(), xd.data(), nb, M, s4);
      EXPECT_EQ(0, std::memcmp(v8, s8, size_t(4 * M))) << "q8 M=" << M;
      EXPECT_EQ(0, std::memcmp(v4, s4, size_t(4 * M))) << "q4 M=" << M;
      // Row m of a multi-row call is the single-row call on row m.
      for (int64_t m = 0; m < M; ++m) {
        t->dot_q4(w4.data(), x8.data() + m * nb, xd.data() + m * nb, nb, 1, one);
        EXPECT_EQ(0, std::memcmp(&one[0], &v4[m], 4)) << "q4 row " << m << " of " << M;
      }
    }
    // The fused pair of Q4_0 rows is two single-row calls, bit for bit (nb = 9:
    // one group of eight blocks and the tail).
    {
      std::vector<BlockQ4_0> w2(w4);
      w2.insert(w2.end(), w4.rbegin(), w4.rend());
      float pv[2], ps[2], r0[1], r1[1];
      t->dot_q4_pair(w2.data(), x8.data(), xd.data(), nb, pv);
      s.dot_q4_pair(w2.data(), x8.data(), xd.data(), nb, ps);
      t->dot_q4(w2.data(), x8.data(), xd.data(), nb, 1, r0);
      t->dot_q4(w2.data() + nb, x8.data(), xd.data(), nb, 1, r1);
      EXPECT_EQ(0, std::memcmp(pv, ps, sizeof pv)) << "q4 pair vs scalar pair";
      EXPECT_EQ(0, std::memcmp(&pv[0], r0, 4)) << "q4 pair row 0";
      EXPECT_EQ(0, std::memcmp(&pv[1], r1, 4)) << "q4 pair row 1";
      EXPECT_NE(pv[0], pv[1]);  // the second row is really the reversed one
    }
    // Activation quantizers: same bytes and scales, ties and zero blocks included.
    auto x = randn(size_t(K), 6, 3.f);
    for (int j = 0; j < 32; ++j) x[size_t(32 + j)] = 0.f;  // an all-zero block
    x[70] = 127.f;
    x[71] = 0.5f;  // x / d = 0.5 exactly: ties to even gives 0
    x[72] = 1.5f;  // 1.5 -> 2
    std::vector<BlockQ8_0> qa(nb), qb(nb);
    std::vector<float> da(nb), db(nb);
    t->quantize_q8(x.data(), qa.data(), da.data(), nb);
    s.quantize_q8(x.data(), qb.data(), db.data(), nb);
    EXPECT_EQ(0, std::memcmp(qa.data(), qb.data(), qa.size() * sizeof(BlockQ8_0)));
    EXPECT_EQ(0, std::memcmp(da.data(), db.data(), da.size() * 4));
    EXPECT_EQ(qb[2].qs[71 - 64], 0);
    EXPECT_EQ(qb[2].qs[72 - 64], 2);
    for (int64_t k : {int64_t(5), int64_t(64), K}) {
      std::vector<int8_t> ia(static_cast<size_t>(k)), ib(static_cast<size_t>(k));
      float sa = -1, sb = -2;
      t->quantize_i8(x.data(), ia.data(), &sa, k);
      s.quantize_i8(x.data(), ib.data(), &sb, k);
      EXPECT_EQ(0, std::memcmp(ia.data(), ib.data(), size_t(k))) << "i8 k=" << k;
      EXPECT_EQ(sa, sb);
    }
  }
}

// M rows of x through one call (1 and 2 threads: the same bits) against
// each row through its own decode call (M = 1), on 131 weight rows of 27
// blocks, with a zero activation and an all-zero block in row 1. The packed
// layout's decode call runs on 2 threads, the plain one's on 1.
void expect_rows_equal_decode_rows(DType qdt, int64_t M, bool packed, int64_t K = 32 * 27) {
  const int64_t N = 131;
  auto w = randn(size_t(N * K), 11, 0.1f), x = randn(size_t(M * K), 12);
  x[5] = 0.f;  // and an all-zero block in row 1
  for (int64_t k = 0; k < 32; ++k) x[size_t(K + 64 + k)] = 0.f;
  std::vector<char> wq(dtype_bytes(qdt, size_t(N * K)));
  std::vector<float> ws(static_cast<size_t>(N));
  quantize(qdt, w.data(), wq.data(), ws.data(), N, K, 2);
  std::vector<uint8_t> p(packed ? size_t(qpack_bytes(qdt, N, K)) : 0);
  if (packed) qpack(qdt, wq.data(), ws.data(), p.data(), N, K);
  const auto run = [&](const float* xs, float* y, int64_t rows, int threads) {
    if (packed)
      qmatmul_packed(qdt, xs, p.data(), y, rows, N, K, threads);
    else
      qmatmul(qdt, xs, wq.data(), ws.data(), y, rows, N, K, threads);
  };
  std::vector<float> y1(size_t(M * N)), y2(size_t(M * N)), row(static_cast<size_t>(N));
  run(x.data(), y1.data(), M, 1);
  run(x.data(), y2.data(), M, 2);
  EXPECT_EQ(0, std::memcmp(y1.data(), y2.data(), y1.size() * 4)) << "threads 1 vs 2";
  for (int64_t m = 0; m < M; ++m) {
    run(x.data() + m * K, row.data(), 1, packed ? 2 : 1);
    ASSERT_EQ(0, std::memcmp(row.data(), y1.data() + m * N, size_t(N) * 4))
        << dtype_name(qdt) << " M=" << M << " K=" << K << " row " << m;
  }
}

// Prefill-shaped calls (more rows than the decode path takes) go through the
// 512-bit tile kernel where the CPU has it: each row of the result must be
// bit for bit the single-row (decode) call on that row, whatever the thread
// count, for odd row counts, an odd number of weight rows and a partial
// group of eight blocks.
TEST(Quant, PrefillRowsEqualDecodeRowsBitForBit) {
  for (DType qdt : {DType::Q8_0, DType::Q4_0, DType::I8})
    for (int64_t M : {int64_t(9), int64_t(16), int64_t(23)})
      expect_rows_equal_decode_rows(qdt, M, /*packed=*/false);
}

// The same prefill path against the exact integer reference (float64 sums of
// the dequantized weights times the quantized activations).
TEST(Quant, PrefillMatchesIntegerReference) {
  for (DType qdt : {DType::I8, DType::Q8_0, DType::Q4_0}) {
    check_qmatmul(qdt, 17, 70, 32 * 9);
    check_qmatmul(qdt, 40, 33, 768);
  }
}

// The packed layout of the 512-bit kernels (only where the CPU has them):
// against the exact integer reference for N not a multiple of 16 (the
// padded rows must not reach y), K of one and of many blocks, odd K for I8,
// decode (M = 1) and prefill shapes, thread counts 1 and 2.
TEST(Quant, PackedMatchesIntegerReference) {
  if (qpack_bytes(DType::Q8_0, 16, 32) == 0) GTEST_SKIP() << "no packed layout on this CPU";
  for (DType qdt : {DType::I8, DType::Q8_0, DType::Q4_0}) {
    check_qmatmul(qdt, 1, 37, 64, true);
    check_qmatmul(qdt, 1, 16, 32, true);
    check_qmatmul(qdt, 1, 200, 32 * 9, true);
    check_qmatmul(qdt, 2, 45, 32 * 70, true);
    check_qmatmul(qdt, 3, 8, 32, true);
    check_qmatmul(qdt, 5, 19, 256, true);
    check_qmatmul(qdt, 17, 70, 32 * 9, true);
    check_qmatmul(qdt, 40, 33, 768, true);
  }
  check_qmatmul(DType::I8, 4, 9, 77, true);
  check_qmatmul(DType::I8, 1, 21, 6, true);
}

// Packed prefill rows equal the packed decode (M = 1) call on that row, bit
// for bit, whatever the thread count and the number of rows per tile (tiles
// of one and two rows take their sums in a separate pass, the others not).
TEST(Quant, PackedPrefillRowsEqualDecodeRowsBitForBit) {
  if (qpack_bytes(DType::Q8_0, 16, 32) == 0) GTEST_SKIP() << "no packed layout on this CPU";
  for (DType qdt : {DType::Q8_0, DType::Q4_0, DType::I8})
    for (int64_t M : {int64_t(2), int64_t(3), int64_t(9), int64_t(10), int64_t(16), int64_t(23)})
      expect_rows_equal_decode_rows(qdt, M, /*packed=*/true);
  // 70 blocks a row: packed groups of several runs (Q8_0: 32 + 32 + 6,
  // Q4_0: 64 + 6), which the one- and two-row tiles sum a run at a time.
  for (DType qdt : {DType::Q8_0, DType::Q4_0})
    for (int64_t M : {int64_t(1), int64_t(2), int64_t(9)})
      expect_rows_equal_decode_rows(qdt, M, /*packed=*/true, 32 * 70);
}

// The packed kernels' float order, written out in scalar code from
// quant_internal.h: for Q8_0 and Q4_0, acc = fma(float(p_b), d_w[b] * d_x[b],
// acc) over the blocks in order, p_b the exact int32 dot of block b; for I8,
// float(p) * (s_x * s_w). The 512-bit and the AVX2 kernels (the ctest
// quant_avx2_level runs this with the level capped) must give exactly these
// bits, so a model serves the same tokens on either.
std::vector<float> packed_order_reference(DType qdt, const std::vector<float>& x, const void* wq,
                                          const float* ws, int64_t M, int64_t N, int64_t K) {
  std::vector<float> y(size_t(M * N));
  std::vector<int> xq;
  for (int64_t m = 0; m < M; ++m) {
    const float* xr = x.data() + m * K;
    if (qdt == DType::I8) {
      const float sx = quantize_x_row(xr, K, xq);
      for (int64_t n = 0; n < N; ++n) {
        int32_t p = 0;
        for (int64_t k = 0; k < K; ++k)
          p += int32_t(xq[size_t(k)]) * static_cast<const int8_t*>(wq)[n * K + k];
        y[size_t(m * N + n)] = float(p) * (sx * ws[n]);
      }
      continue;
    }
    for (int64_t n = 0; n < N; ++n) {
      float acc = 0.f;
      for (int64_t b = 0; b < K / 32; ++b) {
        int q[32];
        const float dx = quantize_x_block(xr, b, q);
        float dw;
        const int32_t p = int32_t(weight_block_dot(qdt, wq, n, K, b, q, &dw));
        acc = std::fma(float(p), dw * dx, acc);
      }
      y[size_t(m * N + n)] = acc;
    }
  }
  return y;
}

TEST(Quant, PackedKernelsFollowTheirFloatOrderBitForBit) {
  if (qpack_bytes(DType::Q8_0, 16, 32) == 0) GTEST_SKIP() << "no packed layout on this CPU";
  struct Shape {
    int64_t M, N, K;
  };
  // One and many runs per group (Q8_0: 32 blocks a run, Q4_0: 64), rows past
  // a tile and past a group, weights of full scale (|q| = 127 at the block
  // maximum) and activations with a zero block.
  for (DType qdt : {DType::Q8_0, DType::Q4_0, DType::I8})
    for (Shape s : {Shape{1, 37, 64}, Shape{1, 40, 32 * 70}, Shape{2, 17, 32 * 9},
                    Shape{5, 33, 768}, Shape{9, 16, 32 * 70}}) {
      auto w = randn(size_t(s.N * s.K), 21, 0.1f), x = randn(size_t(s.M * s.K), 22, 3.f);
      for (int64_t k = 0; k < 32; ++k) x[size_t(k)] = 0.f;
      std::vector<char> wq(dtype_bytes(qdt, size_t(s.N * s.K)));
      std::vector<float> ws(static_cast<size_t>(s.N)), y(size_t(s.M * s.N));
      quantize(qdt, w.data(), wq.data(), ws.data(), s.N, s.K, 2);
      ASSERT_TRUE(packed_qmatmul(qdt, x.data(), wq.data(), ws.data(), y.data(), s.M, s.N, s.K, 2));
      const auto want = packed_order_reference(qdt, x, wq.data(), ws.data(), s.M, s.N, s.K);
      for (size_t i = 0; i < y.size(); ++i)
        ASSERT_EQ(y[i], want[i]) << dtype_name(qdt) << " M=" << s.M << " N=" << s.N << " K=" << s.K
                                 << " at " << i;
    }
}

// A -128 weight is not quantize()'s output, and the AVX2 packed kernels
// could not multiply it: qpack refuses it by row and element.
TEST(Quant, PackRefusesMinus128) {
  if (qpack_bytes(DType::Q8_0, 16, 32) == 0) GTEST_SKIP() << "no packed layout on this CPU";
  const int64_t N = 3, K = 64;
  std::vector<BlockQ8_0> q8(size_t(N * K / 32));
  for (auto& b : q8) {
    b.d = f32_to_f16(1.f);
    for (auto& v : b.qs) v = 1;
  }
  std::vector<uint8_t> p(size_t(qpack_bytes(DType::Q8_0, N, K)));
  EXPECT_NO_THROW(qpack(DType::Q8_0, q8.data(), nullptr, p.data(), N, K));
  q8[3].qs[5] = -128;  // row 1, element 37
  try {
    qpack(DType::Q8_0, q8.data(), nullptr, p.data(), N, K);
    FAIL() << "a -128 weight was packed";
  } catch (const KernelError& e) {
    EXPECT_NE(std::string(e.what()).find("row 1 element 37"), std::string::npos) << e.what();
  }
  std::vector<int8_t> i8(size_t(N * K), 2);
  std::vector<float> ws(size_t(N), 1.f);
  i8[size_t(2 * K + 9)] = -128;
  std::vector<uint8_t> pi(size_t(qpack_bytes(DType::I8, N, K)));
  EXPECT_THROW(qpack(DType::I8, i8.data(), ws.data(), pi.data(), N, K), KernelError);
}

TEST(Quant, BlockedTypesNeedKMultipleOf32) {
  std::vector<float> w(40);
  std::vector<char> q(1024);
  EXPECT_THROW(quantize(DType::Q4_0, w.data(), q.data(), nullptr, 1, 40, 1), KernelError);
  EXPECT_THROW(quantize(DType::F32, w.data(), q.data(), nullptr, 1, 32, 1), KernelError);
}

// The ref backend is the oracle of `keel verify`; when it implements these
// kernels, the bytes must agree exactly and qmatmul up to f32 rounding.
TEST(Quant, AgreesWithRefBackend) {
  std::unique_ptr<Backend> ref;
  try {
    ref = make_backend("ref");
  } catch (const Error& e) {
    GTEST_SKIP() << e.what();
  }
  const int64_t M = 3, N = 11, K = 128;
  auto w = randn(size_t(N * K), 8), x = randn(size_t(M * K), 9);
  for (DType qdt : {DType::I8, DType::Q8_0, DType::Q4_0}) {
    const size_t bytes = dtype_bytes(qdt, size_t(N * K));
    std::vector<char> qa(bytes), qb(bytes);
    std::vector<float> sa(N), sb(N), ya(size_t(M * N)), yb(size_t(M * N));
    try {
      ref->quantize(qdt, w.data(), qb.data(), qdt == DType::I8 ? sb.data() : nullptr, N, K);
      ref->qmatmul(qdt, x.data(), qb.data(), sb.data(), yb.data(), M, N, K);
    } catch (const Error& e) {
      GTEST_SKIP() << "ref backend: " << e.what();
    }
    quantize(qdt, w.data(), qa.data(), qdt == DType::I8 ? sa.data() : nullptr, N, K, 2);
    EXPECT_EQ(0, std::memcmp(qa.data(), qb.data(), bytes)) << dtype_name(qdt) << " bytes";
    if (qdt == DType::I8) {
      EXPECT_EQ(0, std::memcmp(sa.data(), sb.data(), 4 * N)) << "scales";
    }
    qmatmul(qdt, x.data(), qa.data(), sa.data(), ya.data(), M, N, K, 2);
    // Both quantize x the same way and sum exact integer dots, so they differ
    // only in how the scaled partial sums are rounded: ref adds in double,
    // cpu in f32 over K/32 blocks (plus 3 tree levels), each add off by at
    // most 2^-24 of the running magnitude, bounded by sum |x| |w| (with
    // slack for quantization: 1.1x).
    const double steps = qdt == DType::I8 ? 3.0 : double(K / kQBlock + 4);
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) {
        double mag = 0;
        for (int64_t k = 0; k < K; ++k) mag += std::fabs(double(x[m * K + k]) * w[n * K + k]);
        const size_t i = size_t(m * N + n);
        EXPECT_NEAR(ya[i], yb[i], steps * 0x1p-24 * 1.1 * mag) << dtype_name(qdt) << " y " << i;
      }
  }
}

// Why quantized logits of `keel verify model` can differ between ref and cpu
// by ~1e-2 at a few positions while f32 ones agree to ~1e-6: each backend's
// f32 kernels round differently (last bits), and when an activation lands at
// a rounding boundary of its int8 quantization, one ulp moves its integer by
// one step, which moves y by d_x * d_w * q_w, many orders above f32 rounding.
// The functions are the same; this pins down the mechanism on one element.
TEST(Quant, OneUlpAtARoundingTieMovesOneQuantizationStep) {
  const int64_t K = 32, N = 1;
  std::vector<float> w(size_t(K), 0.f), x(size_t(K), 0.f);
  w[3] = 1.f;
  w[0] = 1.f;    // amax 1: d_w = 1/127
  x[0] = 127.f;  // block scale d_x = 1 exactly
  x[3] = 2.5f;   // x / d_x = 2.5: ties to even -> 2
  std::vector<BlockQ8_0> wq(1);
  quantize(DType::Q8_0, w.data(), wq.data(), nullptr, N, K, 1);
  float y0 = 0, y1 = 0;
  qmatmul(DType::Q8_0, x.data(), wq.data(), nullptr, &y0, 1, N, K, 1);
  x[3] = std::nextafter(2.5f, 3.f);  // one ulp up -> 3
  qmatmul(DType::Q8_0, x.data(), wq.data(), nullptr, &y1, 1, N, K, 1);
  const float dw = f16_to_f32(wq[0].d);
  EXPECT_FLOAT_EQ(y0, (127.f * 127.f + 2.f * 127.f) * dw);
  EXPECT_FLOAT_EQ(y1 - y0, 127.f * dw);  // one integer step of x times q_w = 127
}

}  // namespace
}  // namespace keel::backend::cpu
