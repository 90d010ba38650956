// bf16 <-> f32 for shaders that store bf16 as 16-bit words; the rounding is
// core/dtype.h's f32_to_bf16 (nearest even, NaN kept quiet) so bits match the host.
float bf16_to_f32(uint h) { return uintBitsToFloat(h << 16); }
uint f32_to_bf16(float f) {
  uint u = floatBitsToUint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return ((u >> 16) | 0x40u) & 0xffffu;
  u += 0x7fffu + ((u >> 16) & 1u);
  return u >> 16;
}
