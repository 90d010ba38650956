#version 450
// LayerNorm over rows (N, C), f32 or bf16 storage with f32 math.
// pass 0 (forward), one workgroup per row: mean, then the variance of
//   x - mean (two fixed trees, no one-pass cancellation); y = xhat * w + b.
// pass 1 (backward dx), one workgroup per row with the saved mean/rstd:
//   dx += rstd * (dy*w - mean(dy*w) - xhat * mean(dy*w*xhat)).
// pass 2 (backward dw, db), one thread per column over rows in order.
#extension GL_EXT_shader_16bit_storage : require
#extension GL_GOOGLE_include_directive : require
#include "bf16.glsl"

layout(local_size_x = 256) in;
layout(binding = 0) readonly buffer X32 { float x32[]; };
layout(binding = 0) readonly buffer X16 { uint16_t x16[]; };
layout(binding = 1) readonly buffer W32 { float w32[]; };
layout(binding = 1) readonly buffer W16 { uint16_t w16[]; };
layout(binding = 2) readonly buffer B32 { float b32[]; };  // bias (fwd) or dy (bwd)
layout(binding = 2) readonly buffer B16 { uint16_t b16[]; };
layout(binding = 3) buffer Y32 { float y32[]; };  // y (fwd) or dx (bwd)
layout(binding = 3) buffer Y16 { uint16_t y16[]; };
layout(binding = 4) buffer M { float mean[]; };
layout(binding = 5) buffer R { float rstd[]; };
layout(binding = 6) buffer DW { float dw[]; };
layout(binding = 7) buffer DB { float db[]; };
layout(push_constant) uniform P {
  uint N, C, bf16, pass_, has_bias;
  float eps;
  uint ox, ow, ob, oy, om, orr, odw, odb;
} p;

shared float part[256];
shared float part2[256];

float ld_x(uint i) { return p.bf16 != 0 ? bf16_to_f32(uint(x16[p.ox + i])) : x32[p.ox + i]; }
float ld_w(uint i) { return p.bf16 != 0 ? bf16_to_f32(uint(w16[p.ow + i])) : w32[p.ow + i]; }
float ld_b(uint i) { return p.bf16 != 0 ? bf16_to_f32(uint(b16[p.ob + i])) : b32[p.ob + i]; }
float ld_y(uint i) { return p.bf16 != 0 ? bf16_to_f32(uint(y16[p.oy + i])) : y32[p.oy + i]; }
void st_y(uint i, float v) {
  if (p.bf16 != 0) y16[p.oy + i] = uint16_t(f32_to_bf16(v));
  else y32[p.oy + i] = v;
}

// Fixed-tree sums of a and b over the workgroup; every thread gets both.
vec2 tree2(float a, float b) {
  const uint t = gl_LocalInvocationID.x;
  part[t] = a;
  part2[t] = b;
  barrier();
  for (uint h = 128; h > 0; h >>= 1) {
    if (t < h) {
      part[t] += part[t + h];
      part2[t] += part2[t + h];
    }
    barrier();
  }
  const vec2 r = vec2(part[0], part2[0]);
  barrier();
  return r;
}

void main() {
  const uint t = gl_LocalInvocationID.x;
  if (p.pass_ == 2) {
    for (uint c = gl_GlobalInvocationID.x; c < p.C; c += gl_NumWorkGroups.x * 256) {
      float aw = 0, ab = 0;
      for (uint i = 0; i < p.N; ++i) {
        const float g = ld_b(i * p.C + c);
        aw += g * (ld_x(i * p.C + c) - mean[p.om + i]) * rstd[p.orr + i];
        ab += g;
      }
      dw[p.odw + c] += aw;
      if (p.has_bias != 0) db[p.odb + c] += ab;
    }
    return;
  }
  for (uint row = gl_WorkGroupID.x; row < p.N; row += gl_NumWorkGroups.x) {
    const uint base = row * p.C;
    if (p.pass_ == 0) {
      float s = 0;
      for (uint c = t; c < p.C; c += 256) s += ld_x(base + c);
      const float mu = tree2(s, 0).x / float(p.C);
      float v = 0;
      for (uint c = t; c < p.C; c += 256) {
        const float d = ld_x(base + c) - mu;
        v += d * d;
      }
      const float rs = 1.0 / sqrt(tree2(v, 0).x / float(p.C) + p.eps);
      if (t == 0) {
        mean[p.om + row] = mu;
        rstd[p.orr + row] = rs;
      }
      for (uint c = t; c < p.C; c += 256) {
        float r = (ld_x(base + c) - mu) * rs * ld_w(c);
        if (p.has_bias != 0) r += ld_b(c);
        st_y(base + c, r);
      }
    } else {
      const float mu = mean[p.om + row], rs = rstd[p.orr + row];
      float s1 = 0, s2 = 0;
      for (uint c = t; c < p.C; c += 256) {
        const float dxh = ld_b(base + c) * ld_w(c);
        s1 += dxh;
        s2 += dxh * (ld_x(base + c) - mu) * rs;
      }
      const vec2 m = tree2(s1, s2) / float(p.C);
      for (uint c = t; c < p.C; c += 256) {
        const float xhat = (ld_x(base + c) - mu) * rs;
        st_y(base + c, ld_y(base + c) + rs * (ld_b(base + c) * ld_w(c) - m.x - xhat * m.y));
      }
    }
  }
}
