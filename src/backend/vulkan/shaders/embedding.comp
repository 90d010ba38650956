#version 450
// Embedding over n ids and C columns, f32 or bf16 table. Forward:
// out[i, c] = table[ids[i], c], one thread per element. Backward: one thread
// per column walks the ids in order, dtable[ids[i], c] += dout[i, c] (f32):
// repeated ids add in the same order as the host, with no atomics.
#extension GL_EXT_shader_16bit_storage : require
#extension GL_GOOGLE_include_directive : require
#include "bf16.glsl"

layout(local_size_x = 256) in;
layout(binding = 0) readonly buffer Ids { int ids[]; };
layout(binding = 1) readonly buffer S32 { float s32[]; };  // table (fwd) or dout (bwd)
layout(binding = 1) readonly buffer S16 { uint16_t s16[]; };
layout(binding = 2) buffer D32 { float d32[]; };  // out (fwd) or dtable (bwd, f32)
layout(binding = 2) buffer D16 { uint16_t d16[]; };
layout(push_constant) uniform P { uint n, C, bf16, backward, oi, os, od; } p;

float ld_s(uint i) { return p.bf16 != 0 ? bf16_to_f32(uint(s16[p.os + i])) : s32[p.os + i]; }

void main() {
  const uint stride = gl_NumWorkGroups.x * 256;
  if (p.backward != 0) {
    for (uint c = gl_GlobalInvocationID.x; c < p.C; c += stride)
      for (uint i = 0; i < p.n; ++i)
        d32[p.od + uint(ids[p.oi + i]) * p.C + c] += ld_s(i * p.C + c);
    return;
  }
  const uint total = p.n * p.C;
  for (uint e = gl_GlobalInvocationID.x; e < total; e += stride) {
    const uint i = e / p.C, c = e % p.C;
    const uint src = uint(ids[p.oi + i]) * p.C + c;
    if (p.bf16 != 0) d16[p.od + e] = s16[p.os + src];
    else d32[p.od + e] = s32[p.os + src];
  }
}
