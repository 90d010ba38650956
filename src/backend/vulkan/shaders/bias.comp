#version 450
// Bias over rows (N, C). Forward: y[i, c] += bias[c], one thread per element.
// Backward: one thread per column, dbias[c] (f32) += sum over rows, ascending,
// of dy[i, c] (no atomics, same bits every run).
#extension GL_EXT_shader_16bit_storage : require
#extension GL_GOOGLE_include_directive : require
#include "bf16.glsl"

layout(local_size_x = 256) in;
layout(binding = 0) readonly buffer S32 { float s32[]; };  // bias (fwd) or dy (bwd)
layout(binding = 0) readonly buffer S16 { uint16_t s16[]; };
layout(binding = 1) buffer D32 { float d32[]; };  // y (fwd) or dbias (bwd, f32)
layout(binding = 1) buffer D16 { uint16_t d16[]; };
layout(push_constant) uniform P { uint N, C, bf16, backward, os, od; } p;

float ld_s(uint i) { return p.bf16 != 0 ? bf16_to_f32(uint(s16[p.os + i])) : s32[p.os + i]; }

void main() {
  const uint stride = gl_NumWorkGroups.x * 256;
  if (p.backward != 0) {
    for (uint c = gl_GlobalInvocationID.x; c < p.C; c += stride) {
      float acc = 0;
      for (uint i = 0; i < p.N; ++i) acc += ld_s(i * p.C + c);
      d32[p.od + c] += acc;
    }
    return;
  }
  const uint total = p.N * p.C;
  for (uint e = gl_GlobalInvocationID.x; e < total; e += stride) {
    const float b = ld_s(e % p.C);
    if (p.bf16 != 0) d16[p.od + e] = uint16_t(f32_to_bf16(bf16_to_f32(uint(d16[p.od + e])) + b));
    else d32[p.od + e] += b;
  }
}
