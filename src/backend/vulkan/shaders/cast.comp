#version 450
// Conversions between f32 and bf16 storage (either way, or a copy), rounding
// to nearest even exactly as core/dtype.h does, so the bits match the host.
#extension GL_EXT_shader_16bit_storage : require
#extension GL_GOOGLE_include_directive : require
#include "bf16.glsl"

layout(local_size_x = 256) in;
layout(binding = 0) readonly buffer S32 { float s32[]; };
layout(binding = 0) readonly buffer S16 { uint16_t s16[]; };
layout(binding = 1) writeonly buffer D32 { float d32[]; };
layout(binding = 1) writeonly buffer D16 { uint16_t d16[]; };
layout(push_constant) uniform P { uint n, src_bf16, dst_bf16, os, od; } p;

void main() {
  const uint stride = gl_NumWorkGroups.x * 256;
  for (uint i = gl_GlobalInvocationID.x; i < p.n; i += stride) {
    if (p.src_bf16 != 0 && p.dst_bf16 != 0) {
      d16[p.od + i] = s16[p.os + i];
    } else if (p.src_bf16 != 0) {
      d32[p.od + i] = bf16_to_f32(uint(s16[p.os + i]));
    } else if (p.dst_bf16 != 0) {
      d16[p.od + i] = uint16_t(f32_to_bf16(s32[p.os + i]));
    } else {
      d32[p.od + i] = s32[p.os + i];
    }
  }
}
