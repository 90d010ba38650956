// Quantized blocks as bytes (8-bit storage): llama.cpp's Q8_0 (34 bytes: f16
// d, 32 int8) and Q4_0 (18 bytes: f16 d, 16 bytes of nibbles, element j in
// the low nibble of byte j and j + 16 in the high one), and the f16 scale
// conversions rounded exactly as core/dtype.h's f32_to_f16. Needs 8-bit
// storage and shaderFloat64.
#extension GL_EXT_shader_8bit_storage : require

const uint QK = 32;

uint f32_to_f16(float f) {
  const uint u = floatBitsToUint(f);
  const uint sign = (u >> 16) & 0x8000u;
  const uint a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return sign | 0x7e00u;
  if (a >= 0x477ff000u) return sign | 0x7c00u;
  if (a < 0x38800000u) {
    if (a < 0x33000000u) return sign;
    const uint e = a >> 23;
    const uint m = (a & 0x7fffffu) | 0x800000u;
    const uint shift = 126 - e;
    uint res = m >> shift;
    const uint rem = m & ((1u << shift) - 1u);
    const uint mid = 1u << (shift - 1u);
    if (rem > mid || (rem == mid && (res & 1u) != 0u)) ++res;
    return sign | res;
  }
  uint res = (a >> 13) - ((127u - 15u) << 10);
  const uint rem = a & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (res & 1u) != 0u)) ++res;
  return sign | res;
}
float f16_to_f32(uint h) { return unpackHalf2x16(h).x; }

// round to nearest even, clamped to [-127, 127]
int round_i8(float x) { return int(clamp(roundEven(x), -127.0, 127.0)); }
// a / b rounded once to f32, as the host's IEEE division: a device's f32
// division may be off by an ulp, which moves a code across a rounding
// boundary (seen on lavapipe); the f64 quotient rounded to f32 is exact
// for quotients of floats.
float div(float a, float b) { return float(double(a) / double(b)); }
