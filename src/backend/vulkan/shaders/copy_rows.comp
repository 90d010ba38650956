#version 450
// Strided rows (backend.h's copy_rows): dst[r * ds + c] = src[r * ss + c], or
// += with f32 math rounded once to the storage dtype. One thread per element.
#extension GL_EXT_shader_16bit_storage : require
#extension GL_GOOGLE_include_directive : require
#include "bf16.glsl"

layout(local_size_x = 256) in;
layout(binding = 0) readonly buffer S32 { float s32[]; };
layout(binding = 0) readonly buffer S16 { uint16_t s16[]; };
layout(binding = 1) buffer D32 { float d32[]; };
layout(binding = 1) buffer D16 { uint16_t d16[]; };
layout(push_constant) uniform P { uint rows, cols, ss, ds, bf16, acc, os, od; } p;

void main() {
  const uint n = p.rows * p.cols, stride = gl_NumWorkGroups.x * 256;
  for (uint i = gl_GlobalInvocationID.x; i < n; i += stride) {
    const uint r = i / p.cols, c = i - r * p.cols;
    const uint si = p.os + r * p.ss + c, di = p.od + r * p.ds + c;
    if (p.bf16 != 0) {
      float v = bf16_to_f32(uint(s16[si]));
      if (p.acc != 0) v += bf16_to_f32(uint(d16[di]));
      d16[di] = uint16_t(f32_to_bf16(v));
    } else {
      d32[di] = p.acc != 0 ? d32[di] + s32[si] : s32[si];
    }
  }
}
