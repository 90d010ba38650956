#version 450
// RMSNorm backward over rows (N, C) with the saved rstd. Pass 0, one
// workgroup per row: m = mean(dy * w * x * rstd) by a fixed tree, then
// dx += rstd * (dy * w - x * rstd * m). Pass 1, one thread per column:
// dw[c] += sum over rows, ascending, of dy * x * rstd (f32, no atomics).
#extension GL_EXT_shader_16bit_storage : require
#extension GL_GOOGLE_include_directive : require
#include "bf16.glsl"

layout(local_size_x = 256) in;
layout(binding = 0) readonly buffer DY32 { float dy32[]; };
layout(binding = 0) readonly buffer DY16 { uint16_t dy16[]; };
layout(binding = 1) readonly buffer X32 { float x32[]; };
layout(binding = 1) readonly buffer X16 { uint16_t x16[]; };
layout(binding = 2) readonly buffer W32 { float w32[]; };
layout(binding = 2) readonly buffer W16 { uint16_t w16[]; };
layout(binding = 3) readonly buffer R { float rstd[]; };
layout(binding = 4) buffer DX32 { float dx32[]; };
layout(binding = 4) buffer DX16 { uint16_t dx16[]; };
layout(binding = 5) buffer DW { float dw[]; };
layout(push_constant) uniform P { uint N, C, bf16, pass_, ody, ox, ow, orstd, odx, odw; } p;

shared float part[256];

float ld_dy(uint i) { return p.bf16 != 0 ? bf16_to_f32(uint(dy16[p.ody + i])) : dy32[p.ody + i]; }
float ld_x(uint i) { return p.bf16 != 0 ? bf16_to_f32(uint(x16[p.ox + i])) : x32[p.ox + i]; }
float ld_w(uint i) { return p.bf16 != 0 ? bf16_to_f32(uint(w16[p.ow + i])) : w32[p.ow + i]; }

void main() {
  const uint t = gl_LocalInvocationID.x;
  if (p.pass_ == 1) {
    for (uint c = gl_GlobalInvocationID.x; c < p.C; c += gl_NumWorkGroups.x * 256) {
      float acc = 0;
      for (uint i = 0; i < p.N; ++i) acc += ld_dy(i * p.C + c) * ld_x(i * p.C + c) * rstd[p.orstd + i];
      dw[p.odw + c] += acc;
    }
    return;
  }
  for (uint row = gl_WorkGroupID.x; row < p.N; row += gl_NumWorkGroups.x) {
    const uint base = row * p.C;
    const float rs = rstd[p.orstd + row];
    float s = 0;
    for (uint c = t; c < p.C; c += 256) s += ld_dy(base + c) * ld_w(c) * ld_x(base + c) * rs;
    part[t] = s;
    barrier();
    for (uint h = 128; h > 0; h >>= 1) {
      if (t < h) part[t] += part[t + h];
      barrier();
    }
    const float m = part[0] / float(p.C);
    barrier();  // part[0] is read by all before the next row overwrites it
    for (uint c = t; c < p.C; c += 256) {
      const float d = rs * (ld_dy(base + c) * ld_w(c) - ld_x(base + c) * rs * m);
      if (p.bf16 != 0) dx16[p.odx + base + c] = uint16_t(f32_to_bf16(bf16_to_f32(uint(dx16[p.odx + base + c])) + d));
      else dx32[p.odx + base + c] += d;
    }
  }
}
