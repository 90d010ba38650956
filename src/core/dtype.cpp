#include "core/dtype.h"

#include "core/error.h"

namespace keel {

std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::BF16: return "bf16";
    case DType::F16: return "f16";
    case DType::I8: return "i8";
    case DType::I32: return "i32";
    case DType::Q4_0: return "q4_0";
    case DType::Q8_0: return "q8_0";
  }
  return "?";
}

DType dtype_from_name(std::string_view s) {
  for (DType t : {DType::F32, DType::BF16, DType::F16, DType::I8, DType::I32, DType::Q4_0,
                  DType::Q8_0})
    if (dtype_name(t) == s) return t;
  fail("unknown dtype '{}' (expected f32, bf16, f16, i8, i32, q4_0 or q8_0)", s);
}

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: case DType::I32: return 4;
    case DType::BF16: case DType::F16: return 2;
    case DType::I8: return 1;
    default: fail("dtype {} has no per-element size (it is block-quantized)", dtype_name(t));
  }
}

size_t dtype_bytes(DType t, size_t n) {
  if (t == DType::Q4_0 || t == DType::Q8_0) {
    if (n % kQBlock != 0)
      fail("{} tensor of {} elements: count must be a multiple of {}", dtype_name(t), n, kQBlock);
    return n / kQBlock * (t == DType::Q4_0 ? sizeof(BlockQ4_0) : sizeof(BlockQ8_0));
  }
  return n * dtype_size(t);
}

// IEEE half conversions done bit-wise so they are exact and platform independent.
float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  uint32_t u;
  if (exp == 0) {
    if (man == 0) {
      u = sign;
    } else {  // subnormal: normalise
      int e = -1;
      do {
        ++e;
        man <<= 1;
      } while ((man & 0x400u) == 0);
      u = sign | (uint32_t(127 - 15 - e) << 23) | ((man & 0x3ffu) << 13);
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | (man << 13);
  } else {
    u = sign | ((exp + 127 - 15) << 23) | (man << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint16_t f32_to_f16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  uint32_t sign = (u >> 16) & 0x8000u;
  uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return uint16_t(sign | 0x7e00u);  // NaN
  if (a >= 0x477ff000u) return uint16_t(sign | 0x7c00u);  // overflow -> inf
  if (a < 0x38800000u) {                                 // subnormal or zero in f16
    if (a < 0x33000000u) return uint16_t(sign);          // underflows to zero
    uint32_t e = a >> 23;
    uint32_t m = (a & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126 - e;  // value = m * 2^(e-150); f16 subnormal unit is 2^-24
    uint32_t res = m >> shift;
    uint32_t rem = m & ((1u << shift) - 1);
    uint32_t mid = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (res & 1u))) ++res;
    return uint16_t(sign | res);
  }
  uint32_t res = ((a >> 13) - ((127 - 15) << 10));
  uint32_t rem = a & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (res & 1u))) ++res;
  return uint16_t(sign | res);
}

}  // namespace keel
