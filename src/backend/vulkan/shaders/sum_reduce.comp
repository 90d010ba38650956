#version 450
// Second pass of sum_squares: one workgroup adds the f64 per-chunk partials,
// thread t taking partials t, t + 256, ... in order, then a fixed tree; the
// f64 result lands at element `oo` of the output buffer.
layout(local_size_x = 256) in;
layout(binding = 0) readonly buffer I { double partial[]; };
layout(binding = 1) writeonly buffer O { double result[]; };
layout(push_constant) uniform P { uint n, oo; } p;

shared double part[256];

void main() {
  const uint t = gl_LocalInvocationID.x;
  double s = 0;
  for (uint i = t; i < p.n; i += 256) s += partial[i];
  part[t] = s;
  barrier();
  for (uint h = 128; h > 0; h >>= 1) {
    if (t < h) part[t] += part[t + h];
    barrier();
  }
  if (t == 0) result[p.oo] = part[0];
}
