// Element types keel stores, their sizes, and exact scalar conversions between
// f32 and the 16-bit floats (round-to-nearest-even, NaN preserved).
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace keel {

enum class DType : uint8_t {
  F32,
  BF16,
  F16,
  I8,    // plain int8; quantized weights carry a separate per-row f32 scale tensor
  I32,   // token ids, targets
  Q4_0,  // blocks of 32: f16 scale d, 16 bytes of nibbles; x = (q - 8) * d. GGUF's q4_0.
  Q8_0,  // blocks of 32: f16 scale d, 32 int8; x = q * d. GGUF's q8_0.
};

inline constexpr int kQBlock = 32;  // elements per Q4_0 / Q8_0 block
struct BlockQ4_0 {
  uint16_t d;       // f16 scale
  uint8_t qs[16];   // element j in low nibble of qs[j], element j+16 in high nibble
};
struct BlockQ8_0 {
  uint16_t d;  // f16 scale
  int8_t qs[32];
};
static_assert(sizeof(BlockQ4_0) == 18 && sizeof(BlockQ8_0) == 34);

std::string_view dtype_name(DType t);
// Parses "f32", "bf16", ... ; throws keel::Error naming the bad string.
DType dtype_from_name(std::string_view s);
// True for block-quantized types, whose size is per block of kQBlock elements.
constexpr bool dtype_is_blocked(DType t) { return t == DType::Q4_0 || t == DType::Q8_0; }
// Bytes for n elements (n must be a multiple of kQBlock for blocked types).
size_t dtype_bytes(DType t, size_t n);
// Bytes of one element for unblocked types.
size_t dtype_size(DType t);

inline float bf16_to_f32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

// Storage types for 16-bit floats, so kernels can be templated on element type.
struct bf16_t {
  uint16_t bits;
};
struct f16_t {
  uint16_t bits;
};
inline float to_f32(float x) { return x; }
inline float to_f32(bf16_t x) { return bf16_to_f32(x.bits); }
inline float to_f32(f16_t x) { return f16_to_f32(x.bits); }
template <class T>
T from_f32(float x);
template <>
inline float from_f32<float>(float x) { return x; }
template <>
inline bf16_t from_f32<bf16_t>(float x) { return bf16_t{f32_to_bf16(x)}; }
template <>
inline f16_t from_f32<f16_t>(float x) { return f16_t{f32_to_f16(x)}; }

}  // namespace keel
