#version 450
// One matmul per expert group (backend.h's GroupedMatmulArgs): group g owns
// rows offsets[g] <= r < offsets[g+1] of x (R, K) and y (R, N); its weight
// w[g] is (N, K). offsets live on the device (int64, read as low words).
//   mode 0: y[r, n] = x[r, :] . w[g][n, :]             (thread per output)
//   mode 1: dx[r, k] += sum_n dy[r, n] w[g][n, k]      (thread per element)
//   mode 2: dw[g][n, k] (f32) += sum over the group's rows, ascending, of dy[r, n] x[r, k]
// Fixed summation orders, no atomics.
#extension GL_EXT_shader_16bit_storage : require
#extension GL_GOOGLE_include_directive : require
#include "bf16.glsl"

layout(local_size_x = 256) in;
layout(binding = 0) readonly buffer Off { uint offs[]; };  // int64 as (low, high) words
layout(binding = 1) readonly buffer X32 { float x32[]; };
layout(binding = 1) readonly buffer X16 { uint16_t x16[]; };
layout(binding = 2) readonly buffer W32 { float w32[]; };
layout(binding = 2) readonly buffer W16 { uint16_t w16[]; };
layout(binding = 3) buffer Y32 { float y32[]; };  // y (mode 0) or dy (modes 1, 2)
layout(binding = 3) buffer Y16 { uint16_t y16[]; };
layout(binding = 4) buffer DX32 { float dx32[]; };
layout(binding = 4) buffer DX16 { uint16_t dx16[]; };
layout(binding = 5) buffer DW { float dw[]; };
layout(push_constant) uniform P { uint G, N, K, bf16, mode, ooff, ox, ow, oy, odx, odw; } p;

float ldx(uint i) { return p.bf16 != 0 ? bf16_to_f32(uint(x16[p.ox + i])) : x32[p.ox + i]; }
float ldw(uint i) { return p.bf16 != 0 ? bf16_to_f32(uint(w16[p.ow + i])) : w32[p.ow + i]; }
float ldy(uint i) { return p.bf16 != 0 ? bf16_to_f32(uint(y16[p.oy + i])) : y32[p.oy + i]; }
uint off(uint g) { return offs[p.ooff + 2 * g]; }
uint group_of(uint r) {
  uint g = 0;
  while (g + 1 < p.G && off(g + 1) <= r) ++g;
  return g;
}

void main() {
  const uint stride = gl_NumWorkGroups.x * 256;
  const uint R = off(p.G);
  if (p.mode == 2) {
    const uint total = p.G * p.N * p.K;
    for (uint e = gl_GlobalInvocationID.x; e < total; e += stride) {
      const uint g = e / (p.N * p.K), n = (e / p.K) % p.N, k = e % p.K;
      float acc = 0;
      for (uint r = off(g); r < off(g + 1); ++r) acc += ldy(r * p.N + n) * ldx(r * p.K + k);
      dw[p.odw + e] += acc;
    }
    return;
  }
  const uint cols = p.mode == 0 ? p.N : p.K;
  for (uint e = gl_GlobalInvocationID.x; e < R * cols; e += stride) {
    const uint r = e / cols, c = e % cols, g = group_of(r);
    const uint wbase = g * p.N * p.K;
    float acc = 0;
    if (p.mode == 0) {
      for (uint k = 0; k < p.K; ++k) acc += ldx(r * p.K + k) * ldw(wbase + c * p.K + k);
      if (p.bf16 != 0) y16[p.oy + e] = uint16_t(f32_to_bf16(acc));
      else y32[p.oy + e] = acc;
    } else {
      for (uint n = 0; n < p.N; ++n) acc += ldy(r * p.N + n) * ldw(wbase + n * p.K + c);
      if (p.bf16 != 0) dx16[p.odx + e] = uint16_t(f32_to_bf16(bf16_to_f32(uint(dx16[p.odx + e])) + acc));
      else dx32[p.odx + e] += acc;
    }
  }
}
