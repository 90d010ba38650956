// Quantized matmul on the packed weight layout of quant_internal.h (AVX-512
// VNNI): 16 weight rows per 512-bit register, one int32 lane per row, so a
// block of 32 values costs 8 vpdpbusd (Q4_0: 4 loads, each unpacked into
// two) and one convert + one fma for 16 rows, with no horizontal sum. The
// same tile serves batch-1 decode (one activation row) and prefill (up to
// kTileRows rows per pass over a weight group, which then stays in cache),
// and both compute every output in the one order quant_internal.h fixes.
// Tiles of one or two rows take a run's int32 sums first and scale them in
// a second pass, which keeps twice the weight bytes in flight (tile_blocked).
// GCC 12's 512-bit intrinsics start from _mm512_undefined_*(), which
// -W(maybe-)uninitialized reports as a false error.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <iterator>
#include <vector>

#include "backend/cpu/quant_internal.h"

namespace keel::backend::cpu::quant_detail {

namespace {

// Activation rows per pass over a weight group: R int32 and R float
// accumulators beside the weight vector and scales fit the 32 zmm registers.
constexpr int kTileRows = 8;

// Tiles of up to this many rows (decode) stream their weights from memory:
// the blocked types take their sums in a pass of their own (tile_blocked),
// and none of them prefetches, leaving the stream to the hardware
// prefetcher. Asking for the lines 2 KiB ahead cut their bytes per second on
// Zen 4 (one thread: Q8_0 26-31 → 20, I8 30-33 → 25-28 GB/s).
constexpr int kFewRows = 2;

// Prefetch distance of tiles of more than kFewRows rows.
constexpr int64_t kPrefetchBytes = 2048;
// Q4_0 spends more work per byte than the 8-bit layouts, so the same lead
// in time is more bytes: 3 KiB ahead measured 1-11% more weight bytes per
// CPU-second out of cache than 2 KiB on Zen 5 (one thread, batch 1), where
// the 8-bit layouts gained nothing from a longer lead.
constexpr int64_t kPrefetchBytesQ4 = 3072;

// Four activation bytes, broadcast to every lane.
inline __m512i bcast4(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

inline void prefetch(const uint8_t* p, int64_t n) {
  for (int64_t o = 0; o < n; o += 64)
    _mm_prefetch(reinterpret_cast<const char*>(p + o), _MM_HINT_T0);
}

// One 16-lane int32 vector, as an element of an array.
struct alignas(64) Lanes {
  __m512i v;
};

// The int32 sums of rows m < R of x against blocks [b0, b1) of one run of
// Q8_0 / Q4_0 weights (block b0's vectors at wp), one 16-lane vector per
// (block, row).
template <int R, bool Q4>
inline void block_sums(const uint8_t* wp, int64_t nb, int64_t b0, int64_t b1, const BlockQ8_0* xq,
                       Lanes* out) {
  constexpr int64_t qb = Q4 ? 256 : 512;
  const __m512i low4 = _mm512_set1_epi8(0x0f);
  for (int64_t b = b0; b < b1; ++b) {
    const uint8_t* wb = wp + (b - b0) * qb;
    if constexpr (R > kFewRows) prefetch(wb + (Q4 ? kPrefetchBytesQ4 : kPrefetchBytes), qb);
    __m512i p[R];
    for (int r = 0; r < R; ++r) p[r] = _mm512_setzero_si512();
    if constexpr (Q4) {
      for (int j = 0; j < 4; ++j) {
        const __m512i v = _mm512_loadu_si512(wb + 64 * j);
        const __m512i lo = _mm512_and_si512(v, low4);
        const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), low4);
        for (int r = 0; r < R; ++r) {
          const int8_t* xs = xq[r * nb + b].qs;
          p[r] = _mm512_dpbusd_epi32(p[r], lo, bcast4(xs + 4 * j));
          p[r] = _mm512_dpbusd_epi32(p[r], hi, bcast4(xs + 16 + 4 * j));
        }
      }
    } else {
      for (int j = 0; j < 8; ++j) {
        const __m512i v = _mm512_loadu_si512(wb + 64 * j);
        for (int r = 0; r < R; ++r)
          p[r] = _mm512_dpbusd_epi32(p[r], v, bcast4(xq[r * nb + b].qs + 4 * j));
      }
    }
    for (int r = 0; r < R; ++r) out[(b - b0) * R + r].v = p[r];
  }
}

// acc[r] += the scaled sums of blocks [b0, b1) (block_sums' out; block
// b0's 16 scales at sc).
template <int R>
inline void scale_sums(const uint8_t* sc, int64_t nb, int64_t b0, int64_t b1, const Lanes* sums,
                       const float* xd, const int32_t* xoff, __m512* acc) {
  for (int64_t b = b0; b < b1; ++b) {
    const __m512 dw =
        _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(sc + (b - b0) * 32)));
    for (int r = 0; r < R; ++r) {
      const __m512i s =
          _mm512_sub_epi32(sums[(b - b0) * R + r].v, _mm512_set1_epi32(xoff[r * nb + b]));
      acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s),
                               _mm512_mul_ps(dw, _mm512_set1_ps(xd[r * nb + b])), acc[r]);
    }
  }
}

// Rows m < R of x against one group of Q8_0 / Q4_0 weights; lane r of y
// row m is written where mask has bit r.
// With few rows the weights stream from memory, and how many lines are in
// flight is set by how many vector ops wait on them: the out-of-order core
// holds only so many. Scaling each block's sums as it comes (widen the
// scales, subtract the offset, convert, multiply, fma) adds five such ops
// per 8 or 4 vpdpbusd, and the kernel read 12-15 GB/s per core on Zen 4
// where a plain read loop reads 30 (software prefetch did not help there).
// So a tile of up to two rows first takes the int32 sums of a whole run
// (qpack_run_blocks) into a buffer of at most 8 KiB, in L1, then scales them from
// the run's scales, which follow it: 27-32 GB/s for Q8_0 and Q4_0. Every
// output's operations and their order are the same either way.
template <int R, bool Q4>
void tile_blocked(const uint8_t* gp, int64_t nb, const BlockQ8_0* xq, const float* xd,
                  const int32_t* xoff, float* y, int64_t ldy, __mmask16 mask) {
  constexpr int64_t qb = Q4 ? 256 : 512;
  const int64_t run = qpack_run_blocks(Q4);
  __m512 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  for (int64_t b0 = 0; b0 < nb; b0 += run) {
    const int64_t b1 = std::min(nb, b0 + run);
    const uint8_t* wp = gp + b0 * (qb + 32);
    const uint8_t* sc = wp + (b1 - b0) * qb;
    if constexpr (R <= kFewRows) {
      // The whole run in one pass, then its scales, which follow it in
      // memory: read where the stream reaches them.
      thread_local std::vector<Lanes> sums;
      if (sums.size() < size_t(run * R)) sums.resize(size_t(run * R));
      block_sums<R, Q4>(wp, nb, b0, b1, xq, sums.data());
      scale_sums<R>(sc, nb, b0, b1, sums.data(), xd, xoff, acc);
    } else {
      for (int64_t b = b0; b < b1; ++b) {
        Lanes p[R];
        block_sums<R, Q4>(wp + (b - b0) * qb, nb, b, b + 1, xq, p);
        scale_sums<R>(sc + (b - b0) * 32, nb, b, b + 1, p, xd, xoff, acc);
      }
    }
  }
  for (int r = 0; r < R; ++r) _mm512_mask_storeu_ps(y + r * ldy, mask, acc[r]);
}

// The same for I8 weights (rows of K4 values, one scale per row); the int32
// sums wrap, but the true dot fits in int32 (backend.h's bound), so the
// wrapped sum minus the wrapped offset is exact.
template <int R>
void tile_i8(const uint8_t* gp, int64_t K4, const int8_t* xq, const float* xd, const int32_t* xoff,
             float* y, int64_t ldy, __mmask16 mask) {
  __m512i p0[R], p1[R];
  for (int r = 0; r < R; ++r) p0[r] = p1[r] = _mm512_setzero_si512();
  const int64_t nv = K4 / 4;
  int64_t j = 0;
  for (; j + 2 <= nv; j += 2) {
    if (R > kFewRows && j % 16 == 0) prefetch(gp + j * 64 + kPrefetchBytes, 1024);
    const __m512i v0 = _mm512_loadu_si512(gp + j * 64), v1 = _mm512_loadu_si512(gp + j * 64 + 64);
    for (int r = 0; r < R; ++r) {
      p0[r] = _mm512_dpbusd_epi32(p0[r], v0, bcast4(xq + r * K4 + 4 * j));
      p1[r] = _mm512_dpbusd_epi32(p1[r], v1, bcast4(xq + r * K4 + 4 * j + 4));
    }
  }
  if (j < nv) {
    const __m512i v0 = _mm512_loadu_si512(gp + j * 64);
    for (int r = 0; r < R; ++r) p0[r] = _mm512_dpbusd_epi32(p0[r], v0, bcast4(xq + r * K4 + 4 * j));
  }
  const __m512 ws = _mm512_loadu_ps(reinterpret_cast<const float*>(gp + K4 * 16));
  for (int r = 0; r < R; ++r) {
    const __m512i s = _mm512_sub_epi32(_mm512_add_epi32(p0[r], p1[r]), _mm512_set1_epi32(xoff[r]));
    const __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(_mm512_set1_ps(xd[r]), ws));
    _mm512_mask_storeu_ps(y + r * ldy, mask, v);
  }
}

template <int R>
void tile(DType qdt, const uint8_t* gp, int64_t K, const PackedX& x, int64_t m0, float* y,
          int64_t ldy, __mmask16 mask) {
  if (qdt == DType::I8) {
    const int64_t K4 = (K + 3) / 4 * 4;
    tile_i8<R>(gp, K4, static_cast<const int8_t*>(x.xq) + m0 * K4, x.xd + m0, x.xoff + m0, y, ldy,
               mask);
    return;
  }
  const int64_t nb = K / kQBlock;
  const BlockQ8_0* xq = static_cast<const BlockQ8_0*>(x.xq) + m0 * nb;
  if (qdt == DType::Q4_0)
    tile_blocked<R, true>(gp, nb, xq, x.xd + m0 * nb, x.xoff + m0 * nb, y, ldy, mask);
  else
    tile_blocked<R, false>(gp, nb, xq, x.xd + m0 * nb, x.xoff + m0 * nb, y, ldy, mask);
}

}  // namespace

void qmatmul_packed_avx512(DType qdt, const uint8_t* packed, int64_t g0, int64_t g1, int64_t N,
                           int64_t K, const PackedX& x, int64_t M, float* y) {
  // The tile for each row count of a call's last, partial tile.
  static constexpr decltype(&tile<1>) kTiles[] = {tile<1>, tile<2>, tile<3>, tile<4>,
                                                  tile<5>, tile<6>, tile<7>, tile<8>};
  static_assert(std::size(kTiles) == size_t(kTileRows));
  const int64_t gb = qpack_group_bytes(qdt, K);
  for (int64_t g = g0; g < g1; ++g) {
    const int64_t n0 = g * kPackRows, rows = std::min<int64_t>(kPackRows, N - n0);
    const __mmask16 mask = __mmask16((1u << rows) - 1);
    const uint8_t* gp = packed + g * gb;
    for (int64_t m0 = 0; m0 < M; m0 += kTileRows) {
      float* yt = y + m0 * N + n0;
      kTiles[std::min<int64_t>(kTileRows, M - m0) - 1](qdt, gp, K, x, m0, yt, N, mask);
    }
  }
}

}  // namespace keel::backend::cpu::quant_detail
