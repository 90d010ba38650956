#version 450
// RMSNorm forward over rows of x (N, C): y = x * rstd * w, rstd f32 per row.
// One workgroup per row; thread t sums columns t, t+256, ... in order and the
// 256 partial sums meet in a fixed shared-memory tree: no atomics, same bits
// every run.
#extension GL_EXT_shader_16bit_storage : require
#extension GL_GOOGLE_include_directive : require
#include "bf16.glsl"

layout(local_size_x = 256) in;
layout(binding = 0) readonly buffer X32 { float x32[]; };
layout(binding = 0) readonly buffer X16 { uint16_t x16[]; };
layout(binding = 1) readonly buffer W32 { float w32[]; };
layout(binding = 1) readonly buffer W16 { uint16_t w16[]; };
layout(binding = 2) writeonly buffer Y32 { float y32[]; };
layout(binding = 2) writeonly buffer Y16 { uint16_t y16[]; };
layout(binding = 3) writeonly buffer R { float rstd[]; };
layout(push_constant) uniform P { uint N, C, bf16; float eps; uint ox, ow, oy, orstd; } p;

shared float part[256];

float ld_x(uint i) { return p.bf16 != 0 ? bf16_to_f32(uint(x16[p.ox + i])) : x32[p.ox + i]; }
float ld_w(uint i) { return p.bf16 != 0 ? bf16_to_f32(uint(w16[p.ow + i])) : w32[p.ow + i]; }

void main() {
  const uint t = gl_LocalInvocationID.x;
  for (uint row = gl_WorkGroupID.x; row < p.N; row += gl_NumWorkGroups.x) {
    const uint base = row * p.C;
    float s = 0;
    for (uint c = t; c < p.C; c += 256) {
      const float v = ld_x(base + c);
      s += v * v;
    }
    part[t] = s;
    barrier();
    for (uint h = 128; h > 0; h >>= 1) {
      if (t < h) part[t] += part[t + h];
      barrier();
    }
    const float rs = 1.0 / sqrt(part[0] / float(p.C) + p.eps);
    barrier();  // part[0] is read by all before the next row overwrites it
    if (t == 0) rstd[p.orstd + row] = rs;
    for (uint c = t; c < p.C; c += 256) {
      const float r = ld_x(base + c) * rs * ld_w(c);
      if (p.bf16 != 0) y16[p.oy + base + c] = uint16_t(f32_to_bf16(r));
      else y32[p.oy + base + c] = r;
    }
  }
}
