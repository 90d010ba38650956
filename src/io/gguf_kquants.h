// ggml block formats that keel writes and reads in GGUF files but never
// computes in: the k-quants (q4_K, q5_K, q6_K: super-blocks of 256) and the
// 32-element q5_0 / q5_1 that llama.cpp falls back to when a row is not a
// multiple of 256. Quantization reproduces llama.cpp's reference quantizers
// (no importance matrix) operation for operation, so the bytes are the ones
// llama.cpp writes for the same f32 rows when evaluated without FMA contraction.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "io/gguf_writer.h"

namespace keel::io {

inline constexpr int kQK_K = 256;  // elements per k-quant super-block

// The byte layouts, as ggml stores them (little-endian; f16 fields as bits).
struct BlockQ5_0 {
  uint16_t d;
  uint8_t qh[4];   // bit j: fifth bit of element j
  uint8_t qs[16];  // element j in the low nibble of qs[j], element j + 16 in the high one
};
struct BlockQ5_1 {
  uint16_t d, m;  // x = q * d + m
  uint8_t qh[4];
  uint8_t qs[16];
};
struct BlockQ4_K {
  uint16_t d, dmin;    // super-block scales of the 6-bit sub-block scales and mins
  uint8_t scales[12];  // eight 6-bit scales and eight 6-bit mins, packed
  uint8_t qs[128];     // per 64 elements: 32 bytes, low nibbles first 32, high the next 32
};
struct BlockQ5_K {
  uint16_t d, dmin;
  uint8_t scales[12];
  uint8_t qh[32];  // the fifth bits: byte l, bit 2k (+1) for element 64k + l (+ 32)
  uint8_t qs[128];
};
struct BlockQ6_K {
  uint8_t ql[128];    // low four bits
  uint8_t qh[64];     // high two bits
  int8_t scales[16];  // one per 16 elements
  uint16_t d;
};
static_assert(sizeof(BlockQ5_0) == 22 && sizeof(BlockQ5_1) == 24 && sizeof(BlockQ4_K) == 144 &&
              sizeof(BlockQ5_K) == 176 && sizeof(BlockQ6_K) == 210);

// True when `t` is one of the formats above; block_elems / block_bytes then
// give its geometry.
bool ggml_is_raw_block(GgmlType t);
int ggml_block_elems(GgmlType t);     // any type keel knows; 1 for unblocked ones
size_t ggml_block_bytes(GgmlType t);  // bytes of one block (or element)
// "q4_K", "q5_0", ... as llama.cpp names the type.
const char* ggml_type_name(GgmlType t);

// Quantizes n floats (a multiple of the type's block) to the type's blocks.
// Only the raw-block types above; anything else is an IoError.
std::string ggml_quantize(GgmlType t, const float* x, int64_t n);
// Decodes n elements of the type's blocks into out (as llama.cpp's
// dequantize_row_* does, in the same float operations).
void ggml_dequantize(GgmlType t, const void* blocks, int64_t n, float* out);

}  // namespace keel::io
