#version 450
// The dispatch plan of a routing (backend.h's moe_plan), three passes with
// no atomics, so the result is the oracle's whatever the timing:
// mode 0: one thread per expert walks the slots in token order, giving each
//   of its slots its rank (or -1 past capacity) and counting those kept;
// mode 1: one thread turns the counts into offsets (int64 as word pairs);
// mode 2: one thread per slot adds its expert's first row to its rank.
layout(local_size_x = 256) in;
layout(binding = 0) readonly buffer I { int idx[]; };
layout(binding = 1) buffer Pos { int pos[]; };
layout(binding = 2) buffer Off { uint offs[]; };  // (E + 1) int64 as (low, high) words
layout(push_constant) uniform P { uint N, K, E, capacity, mode, oi, op, oo; } p;

void main() {
  const uint slots = p.N * p.K, g = gl_GlobalInvocationID.x;
  if (p.mode == 0) {
    if (g >= p.E) return;
    uint kept = 0;
    for (uint i = 0; i < slots; ++i) {
      if (uint(idx[p.oi + i]) != g) continue;
      if (p.capacity > 0 && kept >= p.capacity) {
        pos[p.op + i] = -1;
      } else {
        pos[p.op + i] = int(kept);
        ++kept;
      }
    }
    offs[p.oo + 2 * (g + 1)] = kept;  // the count, until mode 1
    offs[p.oo + 2 * (g + 1) + 1] = 0;
  } else if (p.mode == 1) {
    if (g != 0) return;
    uint run = 0;
    offs[p.oo] = 0;
    offs[p.oo + 1] = 0;
    for (uint e = 1; e <= p.E; ++e) {
      run += offs[p.oo + 2 * e];
      offs[p.oo + 2 * e] = run;
    }
  } else {
    if (g >= slots) return;
    const int r = pos[p.op + g];
    if (r >= 0) pos[p.op + g] = r + int(offs[p.oo + 2 * uint(idx[p.oi + g])]);
  }
}
