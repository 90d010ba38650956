#version 450
// SwiGLU over n elements, f32 or bf16 storage with f32 math. Forward:
// y = silu(gate) * up (into binding 3). Backward: dgate += dy * up * silu'(gate)
// (binding 3), dup += dy * silu(gate) (binding 4).
#extension GL_EXT_shader_16bit_storage : require
#extension GL_GOOGLE_include_directive : require
#include "bf16.glsl"

layout(local_size_x = 256) in;
layout(binding = 0) readonly buffer G32 { float g32[]; };
layout(binding = 0) readonly buffer G16 { uint16_t g16[]; };
layout(binding = 1) readonly buffer U32 { float u32[]; };
layout(binding = 1) readonly buffer U16 { uint16_t u16[]; };
layout(binding = 2) readonly buffer D32 { float d32[]; };
layout(binding = 2) readonly buffer D16 { uint16_t d16[]; };
layout(binding = 3) buffer Y32 { float y32[]; };
layout(binding = 3) buffer Y16 { uint16_t y16[]; };
layout(binding = 4) buffer Z32 { float z32[]; };
layout(binding = 4) buffer Z16 { uint16_t z16[]; };
layout(push_constant) uniform P { uint n, bf16, backward, og, ou, od, oy, oz; } p;

float sigmoid(float v) { return 1.0 / (1.0 + exp(-v)); }

void main() {
  const uint stride = gl_NumWorkGroups.x * 256;
  const bool h = p.bf16 != 0;
  for (uint i = gl_GlobalInvocationID.x; i < p.n; i += stride) {
    const float g = h ? bf16_to_f32(uint(g16[p.og + i])) : g32[p.og + i];
    const float u = h ? bf16_to_f32(uint(u16[p.ou + i])) : u32[p.ou + i];
    const float s = sigmoid(g);
    if (p.backward == 0) {
      const float r = g * s * u;
      if (h) y16[p.oy + i] = uint16_t(f32_to_bf16(r));
      else y32[p.oy + i] = r;
      continue;
    }
    const float d = h ? bf16_to_f32(uint(d16[p.od + i])) : d32[p.od + i];
    const float dg = d * u * (s * (1.0 + g * (1.0 - s)));
    const float du = d * g * s;
    if (h) {
      y16[p.oy + i] = uint16_t(f32_to_bf16(bf16_to_f32(uint(y16[p.oy + i])) + dg));
      z16[p.oz + i] = uint16_t(f32_to_bf16(bf16_to_f32(uint(z16[p.oz + i])) + du));
    } else {
      y32[p.oy + i] += dg;
      z32[p.oz + i] += du;
    }
  }
}
