#version 450
// Softmax cross-entropy over rows of logits (N, V), one workgroup per row.
// Forward: lse by a max tree then a sum-of-exp tree (fixed order); loss =
// lse - logit[target] (0 for target < 0). Backward with the saved lse:
// dlogits += dloss * (softmax - onehot), nothing for an ignored row.
#extension GL_EXT_shader_16bit_storage : require
#extension GL_GOOGLE_include_directive : require
#include "bf16.glsl"

layout(local_size_x = 256) in;
layout(binding = 0) readonly buffer L32 { float l32[]; };
layout(binding = 0) readonly buffer L16 { uint16_t l16[]; };
layout(binding = 1) readonly buffer Tg { int target[]; };
layout(binding = 2) buffer Loss { float loss[]; };  // losses (fwd) or dloss (bwd)
layout(binding = 3) buffer Lse { float lse[]; };
layout(binding = 4) buffer D32 { float d32[]; };  // dlogits (bwd)
layout(binding = 4) buffer D16 { uint16_t d16[]; };
layout(push_constant) uniform P { uint N, V, bf16, backward, ol, ot, oloss, olse, od; } p;

shared float part[256];

float ld(uint i) { return p.bf16 != 0 ? bf16_to_f32(uint(l16[p.ol + i])) : l32[p.ol + i]; }

void main() {
  const uint t = gl_LocalInvocationID.x;
  for (uint row = gl_WorkGroupID.x; row < p.N; row += gl_NumWorkGroups.x) {
    const uint base = row * p.V;
    const int tg = target[p.ot + row];
    if (p.backward != 0) {
      if (tg < 0) continue;
      const float l = lse[p.olse + row], g = loss[p.oloss + row];
      for (uint j = t; j < p.V; j += 256) {
        const float pr = exp(ld(base + j) - l);
        const float d = g * (pr - (j == uint(tg) ? 1.0 : 0.0));
        if (p.bf16 != 0) d16[p.od + base + j] = uint16_t(f32_to_bf16(bf16_to_f32(uint(d16[p.od + base + j])) + d));
        else d32[p.od + base + j] += d;
      }
      continue;
    }
    float mx = -1.0 / 0.0;
    for (uint j = t; j < p.V; j += 256) mx = max(mx, ld(base + j));
    part[t] = mx;
    barrier();
    for (uint h = 128; h > 0; h >>= 1) {
      if (t < h) part[t] = max(part[t], part[t + h]);
      barrier();
    }
    mx = part[0];
    barrier();
    float s = 0;
    for (uint j = t; j < p.V; j += 256) s += exp(ld(base + j) - mx);
    part[t] = s;
    barrier();
    for (uint h = 128; h > 0; h >>= 1) {
      if (t < h) part[t] += part[t + h];
      barrier();
    }
    const float l = mx + log(part[0]);
    barrier();
    if (t == 0) {
      lse[p.olse + row] = l;
      loss[p.oloss + row] = tg < 0 ? 0.0 : l - ld(base + uint(tg));
    }
  }
}
