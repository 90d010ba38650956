#version 450
// y = a + b over n elements, f32 or bf16 (all three the same dtype); y may
// alias a or b. Grid-stride so any n fits in one dispatch.
#extension GL_EXT_shader_16bit_storage : require
#extension GL_GOOGLE_include_directive : require
#include "bf16.glsl"

layout(local_size_x = 256) in;
layout(binding = 0) readonly buffer A32 { float a32[]; };
layout(binding = 0) readonly buffer A16 { uint16_t a16[]; };
layout(binding = 1) readonly buffer B32 { float b32[]; };
layout(binding = 1) readonly buffer B16 { uint16_t b16[]; };
layout(binding = 2) writeonly buffer Y32 { float y32[]; };
layout(binding = 2) writeonly buffer Y16 { uint16_t y16[]; };
layout(push_constant) uniform P { uint n, bf16, oa, ob, oy; } p;

void main() {
  const uint stride = gl_NumWorkGroups.x * 256;
  for (uint i = gl_GlobalInvocationID.x; i < p.n; i += stride) {
    if (p.bf16 != 0) {
      const float r = bf16_to_f32(uint(a16[p.oa + i])) + bf16_to_f32(uint(b16[p.ob + i]));
      y16[p.oy + i] = uint16_t(f32_to_bf16(r));
    } else {
      y32[p.oy + i] = a32[p.oa + i] + b32[p.ob + i];
    }
  }
}
