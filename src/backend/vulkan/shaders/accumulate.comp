#version 450
// The gradient accumulator y += alpha * x over n elements, f32 or bf16
// storage with f32 math.
#extension GL_EXT_shader_16bit_storage : require
#extension GL_GOOGLE_include_directive : require
#include "bf16.glsl"

layout(local_size_x = 256) in;
layout(binding = 0) readonly buffer X32 { float x32[]; };
layout(binding = 0) readonly buffer X16 { uint16_t x16[]; };
layout(binding = 1) buffer Y32 { float y32[]; };
layout(binding = 1) buffer Y16 { uint16_t y16[]; };
layout(push_constant) uniform P { uint n, bf16, ox, oy; float alpha; } p;

void main() {
  const uint stride = gl_NumWorkGroups.x * 256;
  for (uint i = gl_GlobalInvocationID.x; i < p.n; i += stride) {
    if (p.bf16 != 0) {
      const float r = bf16_to_f32(uint(y16[p.oy + i])) + p.alpha * bf16_to_f32(uint(x16[p.ox + i]));
      y16[p.oy + i] = uint16_t(f32_to_bf16(r));
    } else {
      y32[p.oy + i] += p.alpha * x32[p.ox + i];
    }
  }
}
