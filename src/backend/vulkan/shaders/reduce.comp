#version 450
// Reductions over the last axis of x (N, C): y[i] (f32) = sum, mean or max
// (a NaN anywhere makes the max NaN), one workgroup per row with a fixed
// tree. Backward: dx += dy (sum), dy / C (mean), or dy at the first argmax
// (max: the smallest index among equal maxima wins the tree).
#extension GL_EXT_shader_16bit_storage : require
#extension GL_GOOGLE_include_directive : require
#include "bf16.glsl"

layout(local_size_x = 256) in;
layout(binding = 0) readonly buffer X32 { float x32[]; };
layout(binding = 0) readonly buffer X16 { uint16_t x16[]; };
layout(binding = 1) buffer Y { float y[]; };  // y (fwd) or dy (bwd)
layout(binding = 2) buffer D32 { float d32[]; };  // dx (bwd)
layout(binding = 2) buffer D16 { uint16_t d16[]; };
// op: 0 sum, 1 mean, 2 max
layout(push_constant) uniform P { uint N, C, bf16, op, backward, ox, oy, od; } p;

shared float part[256];
shared uint arg[256];

float ld(uint i) { return p.bf16 != 0 ? bf16_to_f32(uint(x16[p.ox + i])) : x32[p.ox + i]; }
void add_dx(uint i, float v) {
  if (p.bf16 != 0) d16[p.od + i] = uint16_t(f32_to_bf16(bf16_to_f32(uint(d16[p.od + i])) + v));
  else d32[p.od + i] += v;
}
// a beats b: NaN first (forward), else larger, else smaller index.
bool beats(float va, uint ia, float vb, uint ib, bool nan_wins) {
  if (nan_wins && isnan(va) != isnan(vb)) return isnan(va);
  if (va != vb) return va > vb;
  return ia < ib;
}

void main() {
  const uint t = gl_LocalInvocationID.x;
  const bool mx = p.op == 2;
  for (uint row = gl_WorkGroupID.x; row < p.N; row += gl_NumWorkGroups.x) {
    const uint base = row * p.C;
    if (p.backward != 0 && !mx) {
      const float g = p.op == 1 ? y[p.oy + row] / float(p.C) : y[p.oy + row];
      for (uint c = t; c < p.C; c += 256) add_dx(base + c, g);
      continue;
    }
    float acc = mx ? -1.0 / 0.0 : 0.0;
    uint ai = 0xffffffffu;
    for (uint c = t; c < p.C; c += 256) {
      const float v = ld(base + c);
      if (!mx) acc += v;
      else if (ai == 0xffffffffu || beats(v, c, acc, ai, p.backward == 0)) {
        acc = v;
        ai = c;
      }
    }
    part[t] = acc;
    arg[t] = ai;
    barrier();
    for (uint h = 128; h > 0; h >>= 1) {
      if (t < h) {
        if (!mx) part[t] += part[t + h];
        else if (arg[t + h] != 0xffffffffu &&
                 (arg[t] == 0xffffffffu || beats(part[t + h], arg[t + h], part[t], arg[t], p.backward == 0))) {
          part[t] = part[t + h];
          arg[t] = arg[t + h];
        }
      }
      barrier();
    }
    if (t == 0) {
      if (p.backward != 0) {
        if (p.C > 0) add_dx(base + arg[0], y[p.oy + row]);
      } else {
        y[p.oy + row] = p.op == 1 ? part[0] / float(p.C) : part[0];
      }
    }
    barrier();
  }
}
