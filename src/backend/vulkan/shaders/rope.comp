#version 450
// Rotary embedding over (B, T, NH, HS) rows: pair (x[2i], x[2i+1]) turns by
// sign * pos * theta^(-2i/HS), pos = pos0 + t. Forward writes y (may alias x:
// both inputs are read before the writes); backward (sign -1) adds into dx.
// The frequencies come in f64 from the host (a table cached per theta and
// HS), the angle is formed and reduced modulo 2 pi in f64, so long contexts
// keep the fraction of a turn; only cos/sin run in f32.
#extension GL_EXT_shader_16bit_storage : require
#extension GL_GOOGLE_include_directive : require
#include "bf16.glsl"

layout(local_size_x = 256) in;
layout(binding = 0) readonly buffer X32 { float x32[]; };
layout(binding = 0) readonly buffer X16 { uint16_t x16[]; };
layout(binding = 1) buffer Y32 { float y32[]; };
layout(binding = 1) buffer Y16 { uint16_t y16[]; };
layout(binding = 2) readonly buffer F { double freq[]; };  // theta^(-2i/HS), i < HS/2
layout(push_constant) uniform P {
  uint B, T, NH, HS, row_stride, batch_stride, pos0, bf16, backward, ox, oy;
} p;

float ld_x(uint i) { return p.bf16 != 0 ? bf16_to_f32(uint(x16[p.ox + i])) : x32[p.ox + i]; }
float ld_y(uint i) { return p.bf16 != 0 ? bf16_to_f32(uint(y16[p.oy + i])) : y32[p.oy + i]; }
void st_y(uint i, float v) {
  if (p.bf16 != 0) y16[p.oy + i] = uint16_t(f32_to_bf16(v));
  else y32[p.oy + i] = v;
}

void main() {
  const uint half_hs = p.HS / 2;
  const uint pairs = p.B * p.T * p.NH * half_hs;
  for (uint e = gl_GlobalInvocationID.x; e < pairs; e += gl_NumWorkGroups.x * 256) {
    const uint i = e % half_hs, h = (e / half_hs) % p.NH, t = (e / (half_hs * p.NH)) % p.T;
    const uint b = e / (half_hs * p.NH * p.T);
    const uint base = b * p.batch_stride + t * p.row_stride + h * p.HS + 2 * i;
    const double ang = double(p.pos0 + t) * freq[i] * (p.backward != 0 ? -1.0lf : 1.0lf);
    const float a = float(ang - 6.283185307179586lf * floor(ang / 6.283185307179586lf));
    const float c = cos(a), s = sin(a);
    const float x0 = ld_x(base), x1 = ld_x(base + 1);
    const float y0 = x0 * c - x1 * s, y1 = x0 * s + x1 * c;
    if (p.backward != 0) {
      st_y(base, ld_y(base) + y0);
      st_y(base + 1, ld_y(base + 1) + y1);
    } else {
      st_y(base, y0);
      st_y(base + 1, y1);
    }
  }
}
