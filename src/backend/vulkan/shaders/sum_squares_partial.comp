#version 450
// First pass of sum_squares: workgroup g sums x[i]^2 in f64 over the fixed
// chunk [g * 4096, (g + 1) * 4096); thread t takes i = t, t + 256, ... in
// order and a fixed shared-memory tree combines the threads. Chunks depend
// only on n, so the result is the same on every run and every device.
#extension GL_EXT_shader_16bit_storage : require
#extension GL_GOOGLE_include_directive : require
#include "bf16.glsl"

layout(local_size_x = 256) in;
layout(binding = 0) readonly buffer X32 { float x32[]; };
layout(binding = 0) readonly buffer X16 { uint16_t x16[]; };
layout(binding = 1) writeonly buffer O { double partial[]; };
layout(push_constant) uniform P { uint n, bf16, ox; } p;

const uint CHUNK = 4096;
shared double part[256];

void main() {
  const uint t = gl_LocalInvocationID.x, g = gl_WorkGroupID.x;
  const uint end = min(p.n, (g + 1) * CHUNK);
  double s = 0;
  for (uint i = g * CHUNK + t; i < end; i += 256) {
    const double v = double(p.bf16 != 0 ? bf16_to_f32(uint(x16[p.ox + i])) : x32[p.ox + i]);
    s += v * v;
  }
  part[t] = s;
  barrier();
  for (uint h = 128; h > 0; h >>= 1) {
    if (t < h) part[t] += part[t + h];
    barrier();
  }
  if (t == 0) partial[g] = part[0];
}
