// Internal to the cpu quantized matmul: the integer dot-product kernels and
// the activation quantizers, one table per vector level (scalar in quant.cpp,
// AVX2 and AVX-512 VNNI in quant_<isa>.cpp). Integer sums are exact and every
// float operation is fixed below, so all levels give bit-identical results.
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace keel::backend::cpu::quant_detail {

// x rows one dot call handles: each weight block is loaded (and for Q4_0
// unpacked) once for up to this many rows of x.
inline constexpr int64_t kQRows = 4;

// The blocked dot order, written once here for every level. For block b and
// lane j in [0, 8), p_j = sum of w[e] * x[e] over the block's elements
// e = 4j .. 4j+3 (an exact int32), and acc_j = fma(float(p_j), d_w[b] * d_x[b],
// acc_j) with blocks in order from acc_j = 0. The result is
// ((acc_0 + acc_4) + (acc_2 + acc_6)) + ((acc_1 + acc_5) + (acc_3 + acc_7)).
// Eight lanes in one register across all blocks is what keeps the vector
// kernels at memory speed (no horizontal sum per block).
struct QDotTable {
  // out[m] = sum_k w[k] * x[m * K + k] for m < M <= kQRows, exact
  // (|w|, |x| <= 127, K * 127^2 < 2^31).
  void (*dot_i8)(const int8_t* w, const int8_t* x, int64_t K, int64_t M, int32_t* out);
  // out[m] = the blocked dot above of weight row w (nb blocks) with x row m
  // (blocks x + m * nb, f32 scales xd + m * nb), for m < M <= kQRows.
  void (*dot_q8)(const BlockQ8_0* w, const BlockQ8_0* x, const float* xd, int64_t nb, int64_t M,
                 float* out);
  void (*dot_q4)(const BlockQ4_0* w, const BlockQ8_0* x, const float* xd, int64_t nb, int64_t M,
                 float* out);
  // out[0], out[1] = the blocked dots of Q4_0 weight rows w and w + nb with
  // the single x row (x, xd): bit for bit two dot_q4 calls with M = 1,
  // fused for batch-1 decode.
  void (*dot_q4_pair)(const BlockQ4_0* w, const BlockQ8_0* x, const float* xd, int64_t nb,
                      float* out);
  // Activation rows, by backend.h's rules: K values to int8 with one scale
  // (max|x| / 127), or nb blocks of 32 to Q8_0 with each block's stored
  // scale widened back to f32 in xd[b].
  void (*quantize_i8)(const float* x, int8_t* q, float* scale, int64_t K);
  void (*quantize_q8)(const float* x, BlockQ8_0* q, float* xd, int64_t nb);
};

const QDotTable& qdot_scalar();
const QDotTable& qdot_avx2();    // only when the CPU has AVX2
const QDotTable& qdot_avx512();  // only when the CPU has AVX-512 VL + VNNI

// dot_q4_pair in 512-bit registers (quant_gemv_avx512.cpp), the avx512
// table's; same results.
void dot_q4_pair_avx512(const BlockQ4_0* w, const BlockQ8_0* x, const float* xd, int64_t nb,
                        float* out);

// Many-row (prefill) Q8_0 / Q4_0 matmul with 512-bit VNNI, only when the CPU
// has it. x rows, quantized to Q8_0 blocks (xq, scales xd), are packed once
// per call in pairs: pair p's block b is 64 bytes (rows 2p and 2p + 1, each
// value + 128) at xu + (p * nb + b) * 64, and its scales for blocks
// 8g .. 8g+7 are 16 floats at xs + (p * ceil(nb / 8) + g) * 16 (zeros past nb
// and for the row past an odd M).
inline int64_t qgemm_x_bytes(int64_t M, int64_t nb) {
  return (M + 1) / 2 * nb * 64;
}
inline int64_t qgemm_x_scales(int64_t M, int64_t nb) {
  return (M + 1) / 2 * ((nb + 7) / 8) * 16;
}
void qgemm_pack_x_avx512(const BlockQ8_0* xq, const float* xd, int64_t M, int64_t nb, uint8_t* xu,
                         float* xs);
// y[m * N + n] for m < M, n0 <= n < n1, weight rows of nb blocks of qdt:
// bit for bit the dot_q8 / dot_q4 result of row n with x row m.
void qgemm_avx512(DType qdt, const void* w, int64_t n0, int64_t n1, int64_t N, const uint8_t* xu,
                  const float* xs, int64_t M, int64_t nb, float* y);

// ---- The packed weight layout of the 512-bit VNNI kernels
// (quant_packed_avx512.cpp) and the AVX2 ones (quant_packed_avx2.cpp), on
// CPUs with at least AVX2. Weight rows are taken
// 16 at a time (a group; N padded up with zero rows), and within a group the
// values of k = 4j .. 4j+3 of the 16 rows form one 64-byte vector (row r in
// bytes 4r .. 4r+3), so one vpdpbusd with 4 broadcast activation bytes adds
// 4 products to each of 16 rows' int32 lanes: no horizontal sums, one
// stream through memory. vpdpbusd multiplies unsigned by signed bytes, so
// for the 512-bit kernels the weights are stored unsigned (Q4_0 nibbles as
// they are, Q8_0 and I8 as w + 128) and offset * sum(x) is taken off in
// int32. The AVX2 kernels store Q8_0 and I8 as w (two's complement), which
// they multiply with the sign trick (a layout only ever read on the CPU
// that wrote it).
// Per group, at group * qpack_group_bytes, the blocks in runs of 32 (Q8_0)
// or 64 (Q4_0), 16 KiB of weights, each run followed by its scales: the
// run of blocks b0 .. b1 starts at b0 * (qb + 32), qb = 512 (Q8_0) or 256
// (Q4_0); block b's vectors at its start + (b - b0) * qb, then the 16 rows'
// f16 scales of block b at its start + (b1 - b0) * qb + (b - b0) * 32 (a
// group of at most one run: vectors at b * qb, scales at nb * qb + b * 32).
//   Q8_0: 8 vectors per block.
//   Q4_0: 4 vectors per block, vector j holding k = 4j.. in the low nibbles
//         and k = 16 + 4j.. in the high ones.
//   I8:   K padded to K4 (a multiple of 4, with w = 0); vector j at j * 64,
//         then the 16 rows' f32 scales at K4 * 16.
// For Q8_0 and Q4_0 row n's result is acc = fma(float(p_b), d_w[b] * d_x[b],
// acc) over blocks in order from 0, p_b the exact int32 dot of block b; for
// I8 float(p) * (s_x * s_w) as the plain kernels: the same for every M, row
// split and thread count.
inline constexpr int64_t kPackRows = 16;
// Bytes of one block's vectors in a group: 16 rows x 32 values.
inline int64_t qpack_block_bytes(bool q4) {
  return q4 ? 256 : 512;
}
// Blocks per run: 16 KiB of weights, half of an L1. A tile of one or two
// rows sums a whole run before it scales it, and with whole groups as runs,
// groups past 32 KiB (K >= 2048 for Q8_0, 4096 for Q4_0) read 10-35% fewer
// bytes per core-second on Zen 4 (Q8_0 at K = 4096: 25-26 against 31; Q4_0:
// 19-21 against 25-27); runs of 8 KiB were no better, runs of 32 KiB no
// better than whole groups.
inline int64_t qpack_run_blocks(bool q4) {
  return q4 ? 64 : 32;
}
int64_t qpack_group_bytes(DType qdt, int64_t K);
// Writes the packed form of N rows of quantize()'s output (q; scale for I8):
// plain code (quant_pack.cpp), Q8_0 and I8 as w + 128 when unsigned8 (the
// 512-bit kernels), else as w.
void qpack_layout(DType qdt, const void* q, const float* scale, uint8_t* packed, int64_t N,
                  int64_t K, bool unsigned8);
// Activations for the packed kernels: Q8_0 blocks xq (row m at xq + m * nb,
// f32 scales xd) and xoff[m * nb + b] = offset * sum of block b's values,
// offset 128 for Q8_0 and 8 for Q4_0; for I8, rows of K4 int8 values (zeros
// past K), xd[m] the row scale and xoff[m] = 128 * sum of the row.
struct PackedX {
  const void* xq;
  const float* xd;
  const int32_t* xoff;
};
// y[m * N + n] for m < M and the rows n of groups g0 .. g1.
void qmatmul_packed_avx512(DType qdt, const uint8_t* packed, int64_t g0, int64_t g1, int64_t N,
                           int64_t K, const PackedX& x, int64_t M, float* y);
// The same with AVX2 alone (quant_packed_avx2.cpp), each 64-byte vector as
// two 256-bit halves of 8 rows: bit for bit the 512-bit kernels' results.
void qmatmul_packed_avx2(DType qdt, const uint8_t* packed, int64_t g0, int64_t g1, int64_t N,
                         int64_t K, const PackedX& x, int64_t M, float* y);

}  // namespace keel::backend::cpu::quant_detail
