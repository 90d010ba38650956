#version 450
// Second pass of sum_squares: one workgroup adds the per-chunk partials,
// thread t taking partials t, t + 256, ... in order, then a fixed tree.
layout(local_size_x = 256) in;
layout(binding = 0) readonly buffer I { float partial[]; };
layout(binding = 1) writeonly buffer O { float result[]; };
layout(push_constant) uniform P { uint n; } p;

shared float part[256];

void main() {
  const uint t = gl_LocalInvocationID.x;
  float s = 0;
  for (uint i = t; i < p.n; i += 256) s += partial[i];
  part[t] = s;
  barrier();
  for (uint h = 128; h > 0; h >>= 1) {
    if (t < h) part[t] += part[t + h];
    barrier();
  }
  if (t == 0) result[0] = part[0];
}
