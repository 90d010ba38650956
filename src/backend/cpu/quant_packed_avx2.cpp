// Quantized matmul on the packed weight layout of quant_internal.h with AVX2
// only (no VNNI): each 64-byte vector of 16 rows is taken as two 256-bit
// halves of 8 rows, one int32 lane per row, so no horizontal sums. Without
// vpdpbusd, 32 byte products cost vpmaddubsw (pairs to int16) and vpmaddwd
// (int16 pairs to int32). Every output is the same int32 block sum and the
// same float operations in the same order as the 512-bit kernels', so both
// levels give the same bits.
//   Q4_0: the nibbles (0..15) times activation bytes (|x| <= 127) are at most
//   3,810 a pair, so all eight products of a block add up in int16 (30,480)
//   and widen once per block: 8 vpmaddubsw, 7 adds and one vpmaddwd for 8
//   rows x 32 values. The offset 8 * sum(x) is taken off in int32.
//   Q8_0 and I8: stored as signed bytes here (w + 128 would saturate
//   vpmaddubsw against a signed x), multiplied with the sign trick (|x|
//   times w with x's sign), each product pair widened at once: the int32 sum
//   is the true dot, which the 512-bit kernels reach by taking 128 * sum(x)
//   off. (Storing w + 128 and flipping the top bit on load cost 10-15% of
//   batch-1 decode speed on Zen 3.)
// Batch-1 decode on Zen 3, one thread, weights from memory (bench_qdecode):
// Q4_0 1.45-2.1x the plain layout's bytes per CPU-second, Q8_0 and I8 about
// the same as the plain layout; prefill and batched decode about twice the
// plain kernels' rate.
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <iterator>
#include <vector>

#include "backend/cpu/quant_internal.h"

namespace keel::backend::cpu::quant_detail {

namespace {

// Activation rows per pass over a weight group: R x 2 float accumulators and
// R x 2 int sums beside the weight halves fit the 16 ymm registers.
constexpr int kTileRows = 4;

// Tiles of up to this many rows (batch-1 decode) take a run's sums in a pass
// of their own (tile_blocked).
constexpr int kFewRows = 1;

// Four activation bytes, broadcast to every lane.
inline __m256i bcast4(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm256_set1_epi32(v);
}

inline __m256i load(const uint8_t* p) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}

// The 8 f16 scales of half h of a block's 16 rows, widened.
inline __m256 scales_half(const uint8_t* sc, int h) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sc + 16 * h)));
}

// One 8-lane int32 vector, as an element of an array.
struct alignas(32) Lanes {
  __m256i v;
};

// The int32 sums of block b of Q4_0 weights (vectors at wb) with rows m < R
// of x, the 8-bit offset sums not yet taken off: out[2r + h] for half h.
template <int R>
inline void sums_q4(const uint8_t* wb, int64_t nb, int64_t b, const BlockQ8_0* xq, Lanes* out) {
  const __m256i low4 = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
  __m256i s[R][2];
  for (int r = 0; r < R; ++r) s[r][0] = s[r][1] = _mm256_setzero_si256();
  for (int j = 0; j < 4; ++j)
    for (int h = 0; h < 2; ++h) {
      const __m256i v = load(wb + 64 * j + 32 * h);
      const __m256i lo = _mm256_and_si256(v, low4);
      const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);
      for (int r = 0; r < R; ++r) {
        const int8_t* x = xq[r * nb + b].qs;
        s[r][h] = _mm256_add_epi16(s[r][h], _mm256_maddubs_epi16(lo, bcast4(x + 4 * j)));
        s[r][h] = _mm256_add_epi16(s[r][h], _mm256_maddubs_epi16(hi, bcast4(x + 16 + 4 * j)));
      }
    }
  for (int r = 0; r < R; ++r)
    for (int h = 0; h < 2; ++h) out[2 * r + h].v = _mm256_madd_epi16(s[r][h], ones);
}

// Lane += the products of four signed weight bytes sw with four activation
// bytes x (|x| precomputed as ax), pairs widened to int32 at once.
inline __m256i dot_signed(__m256i acc, __m256i sw, __m256i x, __m256i ax, __m256i ones) {
  const __m256i p16 = _mm256_maddubs_epi16(ax, _mm256_sign_epi8(sw, x));
  return _mm256_add_epi32(acc, _mm256_madd_epi16(p16, ones));
}

// The same for Q8_0: the true dots.
template <int R>
inline void sums_q8(const uint8_t* wb, int64_t nb, int64_t b, const BlockQ8_0* xq, Lanes* out) {
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i s[R][2];
  for (int r = 0; r < R; ++r) s[r][0] = s[r][1] = _mm256_setzero_si256();
  for (int j = 0; j < 8; ++j) {
    const __m256i w0 = load(wb + 64 * j), w1 = load(wb + 64 * j + 32);
    for (int r = 0; r < R; ++r) {
      const __m256i x = bcast4(xq[r * nb + b].qs + 4 * j), ax = _mm256_abs_epi8(x);
      s[r][0] = dot_signed(s[r][0], w0, x, ax, ones);
      s[r][1] = dot_signed(s[r][1], w1, x, ax, ones);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int h = 0; h < 2; ++h) out[2 * r + h].v = s[r][h];
}

// acc[r][h] += block b's sums (offset sums xoff taken off for Q4_0), scaled
// by its 16 f16 weight scales at scb and x row r's scale.
template <int R, bool Q4>
inline void scale_sums(const uint8_t* scb, int64_t nb, int64_t b, const Lanes* sums,
                       const float* xd, const int32_t* xoff, __m256 (&acc)[R][2]) {
  for (int h = 0; h < 2; ++h) {
    const __m256 dw = scales_half(scb, h);
    for (int r = 0; r < R; ++r) {
      __m256i p = sums[2 * r + h].v;
      if constexpr (Q4) p = _mm256_sub_epi32(p, _mm256_set1_epi32(xoff[r * nb + b]));
      acc[r][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p),
                                  _mm256_mul_ps(dw, _mm256_set1_ps(xd[r * nb + b])), acc[r][h]);
    }
  }
}

// Rows m < R of x against one group of Q8_0 / Q4_0 weights (gp, nb blocks).
// A tile of up to kFewRows rows streams its weights from memory and takes a
// whole run's int32 sums before scaling them (as the 512-bit kernels do, so
// the scaling's ops do not hold up the loads).
template <int R, bool Q4>
void tile_blocked(const uint8_t* gp, int64_t nb, const BlockQ8_0* xq, const float* xd,
                  const int32_t* xoff, __m256 (&acc)[R][2]) {
  const int64_t run = qpack_run_blocks(Q4), qb = qpack_block_bytes(Q4);
  for (int64_t b0 = 0; b0 < nb; b0 += run) {
    const int64_t b1 = std::min(nb, b0 + run);
    const uint8_t* wp = gp + b0 * (qb + 32);
    const uint8_t* sc = wp + (b1 - b0) * qb;
    if constexpr (R <= kFewRows) {
      thread_local std::vector<Lanes> sums;
      if (sums.size() < size_t(run * 2 * R)) sums.resize(size_t(run * 2 * R));
      for (int64_t b = b0; b < b1; ++b) {
        const uint8_t* wb = wp + (b - b0) * qb;
        if constexpr (Q4)
          sums_q4<R>(wb, nb, b, xq, sums.data() + (b - b0) * 2 * R);
        else
          sums_q8<R>(wb, nb, b, xq, sums.data() + (b - b0) * 2 * R);
      }
      for (int64_t b = b0; b < b1; ++b)
        scale_sums<R, Q4>(sc + (b - b0) * 32, nb, b, sums.data() + (b - b0) * 2 * R, xd, xoff, acc);
    } else {
      for (int64_t b = b0; b < b1; ++b) {
        const uint8_t* wb = wp + (b - b0) * qb;
        Lanes p[2 * R];
        if constexpr (Q4)
          sums_q4<R>(wb, nb, b, xq, p);
        else
          sums_q8<R>(wb, nb, b, xq, p);
        scale_sums<R, Q4>(sc + (b - b0) * 32, nb, b, p, xd, xoff, acc);
      }
    }
  }
}

// Rows m < R of x against one group of I8 weights (rows of K4 values, one
// scale per row); the true dot fits in int32 (backend.h's bound), and so
// does every partial sum of it.
template <int R>
void tile_i8(const uint8_t* gp, int64_t K4, const int8_t* xq, const float* xd,
             __m256 (&out)[R][2]) {
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i s[R][2];
  for (int r = 0; r < R; ++r) s[r][0] = s[r][1] = _mm256_setzero_si256();
  for (int64_t j = 0; j < K4 / 4; ++j) {
    const __m256i w0 = load(gp + j * 64), w1 = load(gp + j * 64 + 32);
    for (int r = 0; r < R; ++r) {
      const __m256i x = bcast4(xq + r * K4 + 4 * j), ax = _mm256_abs_epi8(x);
      s[r][0] = dot_signed(s[r][0], w0, x, ax, ones);
      s[r][1] = dot_signed(s[r][1], w1, x, ax, ones);
    }
  }
  const float* ws = reinterpret_cast<const float*>(gp + K4 * 16);
  for (int h = 0; h < 2; ++h) {
    const __m256 wsh = _mm256_loadu_ps(ws + 8 * h);
    for (int r = 0; r < R; ++r)
      out[r][h] =
          _mm256_mul_ps(_mm256_cvtepi32_ps(s[r][h]), _mm256_mul_ps(_mm256_set1_ps(xd[r]), wsh));
  }
}

// Stores lanes < rows of v (rows past N are padding).
inline void store_rows(float* y, __m256 v, int64_t rows) {
  if (rows >= 8) {
    _mm256_storeu_ps(y, v);
    return;
  }
  alignas(32) float t[8];
  _mm256_store_ps(t, v);
  std::copy(t, t + std::max<int64_t>(rows, 0), y);
}

template <int R>
void tile(DType qdt, const uint8_t* gp, int64_t K, const PackedX& x, int64_t m0, float* y,
          int64_t ldy, int64_t rows) {
  __m256 acc[R][2];
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
  if (qdt == DType::I8) {
    const int64_t K4 = (K + 3) / 4 * 4;
    tile_i8<R>(gp, K4, static_cast<const int8_t*>(x.xq) + m0 * K4, x.xd + m0, acc);
  } else {
    const int64_t nb = K / kQBlock;
    const BlockQ8_0* xq = static_cast<const BlockQ8_0*>(x.xq) + m0 * nb;
    if (qdt == DType::Q4_0)
      tile_blocked<R, true>(gp, nb, xq, x.xd + m0 * nb, x.xoff + m0 * nb, acc);
    else
      tile_blocked<R, false>(gp, nb, xq, x.xd + m0 * nb, x.xoff + m0 * nb, acc);
  }
  for (int r = 0; r < R; ++r) {
    store_rows(y + r * ldy, acc[r][0], rows);
    store_rows(y + r * ldy + 8, acc[r][1], rows - 8);
  }
}

}  // namespace

void qmatmul_packed_avx2(DType qdt, const uint8_t* packed, int64_t g0, int64_t g1, int64_t N,
                         int64_t K, const PackedX& x, int64_t M, float* y) {
  static constexpr decltype(&tile<1>) kTiles[] = {tile<1>, tile<2>, tile<3>, tile<4>};
  static_assert(std::size(kTiles) == size_t(kTileRows));
  const int64_t gb = qpack_group_bytes(qdt, K);
  for (int64_t g = g0; g < g1; ++g) {
    const int64_t n0 = g * kPackRows, rows = std::min<int64_t>(kPackRows, N - n0);
    const uint8_t* gp = packed + g * gb;
    for (int64_t m0 = 0; m0 < M; m0 += kTileRows)
      kTiles[std::min<int64_t>(kTileRows, M - m0) - 1](qdt, gp, K, x, m0, y + m0 * N + n0, N, rows);
  }
}

}  // namespace keel::backend::cpu::quant_detail
