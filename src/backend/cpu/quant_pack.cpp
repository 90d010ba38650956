// The packed weight layout of quant_internal.h, written in plain code: every
// vector level's packed kernels (quant_packed_<isa>.cpp) read the same bytes,
// so packing must not depend on which instructions the compiler may use.
#include <algorithm>
#include <cstring>

#include "backend/cpu/quant_internal.h"

namespace keel::backend::cpu::quant_detail {

namespace {

inline int64_t round64(int64_t n) {
  return (n + 63) / 64 * 64;
}

// Packs one group's rows n0 .. n0 + 16 (rows past N zero).
void pack_group(DType qdt, const void* q, const float* scale, uint8_t* gp, int64_t n0, int64_t N,
                int64_t K, int off8) {
  const int64_t nb = K / kQBlock;
  const int64_t rows = std::min<int64_t>(kPackRows, N - n0);
  if (qdt == DType::I8) {
    const int64_t K4 = (K + 3) / 4 * 4;
    const int8_t* w = static_cast<const int8_t*>(q);
    float* sc = reinterpret_cast<float*>(gp + K4 * 16);
    for (int64_t r = 0; r < kPackRows; ++r) {
      sc[r] = r < rows ? scale[n0 + r] : 0.f;
      for (int64_t k = 0; k < K4; ++k) {
        const int v = r < rows && k < K ? w[(n0 + r) * K + k] : 0;
        gp[(k / 4) * 64 + r * 4 + k % 4] = uint8_t(v + off8);
      }
    }
    return;
  }
  const bool q4 = qdt == DType::Q4_0;
  const int64_t qb = qpack_block_bytes(q4), run = qpack_run_blocks(q4);
  for (int64_t r = 0; r < kPackRows; ++r)
    for (int64_t b = 0; b < nb; ++b) {
      const int64_t b0 = b / run * run, b1 = std::min(nb, b0 + run);
      uint8_t* wb = gp + b0 * (qb + 32) + (b - b0) * qb;
      uint16_t* sc = reinterpret_cast<uint16_t*>(gp + b0 * (qb + 32) + (b1 - b0) * qb);
      if (qdt == DType::Q8_0) {
        const BlockQ8_0* blk =
            r < rows ? static_cast<const BlockQ8_0*>(q) + (n0 + r) * nb + b : nullptr;
        sc[(b - b0) * 16 + r] = blk ? blk->d : 0;
        for (int e = 0; e < kQBlock; ++e)
          wb[(e / 4) * 64 + r * 4 + e % 4] = uint8_t((blk ? int(blk->qs[e]) : 0) + off8);
      } else {
        const BlockQ4_0* blk =
            r < rows ? static_cast<const BlockQ4_0*>(q) + (n0 + r) * nb + b : nullptr;
        sc[(b - b0) * 16 + r] = blk ? blk->d : 0;
        // Element e < 16 is the low nibble of qs[e], e >= 16 the high one of
        // qs[e - 16]; vector j's low nibbles take e = 4j.., its high ones e = 16 + 4j...
        for (int e = 0; e < kQBlock / 2; ++e)
          wb[(e / 4) * 64 + r * 4 + e % 4] = blk ? blk->qs[e] : uint8_t(0x88);
      }
    }
}

}  // namespace

int64_t qpack_group_bytes(DType qdt, int64_t K) {
  if (qdt == DType::I8) return round64((K + 3) / 4 * 4 * kPackRows + kPackRows * 4);
  const int64_t nb = K / kQBlock;
  return round64(nb * (qpack_block_bytes(qdt == DType::Q4_0) + kPackRows * 2));
}

void qpack_layout(DType qdt, const void* q, const float* scale, uint8_t* packed, int64_t N,
                  int64_t K, bool unsigned8) {
  const int off8 = unsigned8 ? 128 : 0;
  const int64_t gb = qpack_group_bytes(qdt, K), groups = (N + kPackRows - 1) / kPackRows;
#pragma omp parallel for schedule(static)
  for (int64_t g = 0; g < groups; ++g) {
    std::memset(packed + g * gb, 0, size_t(gb));
    pack_group(qdt, q, scale, packed + g * gb, g * kPackRows, N, K, off8);
  }
}

}  // namespace keel::backend::cpu::quant_detail
