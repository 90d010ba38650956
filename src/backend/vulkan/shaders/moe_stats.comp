#version 450
// Routing bookkeeping in a fixed order (backend.h's moe_route_stats and
// moe_aux_loss), f64 where the oracle sums in double:
// mode 0: one thread per expert: slot counts of idx and plain_idx, the f64
//   sums of its scores and squared scores over tokens ascending (load rows);
// mode 1: one workgroup: the routing entropy summed over tokens and the
//   dropped slots (stats, f64);
// mode 2: one workgroup per sequence: the balance loss's gradient dscores;
// mode 3: one workgroup: the balance loss, sequences ascending, into loss.
// Per-expert values of a sequence sit in shared memory: E <= 1024.
#extension GL_EXT_shader_explicit_arithmetic_types_float64 : require
layout(local_size_x = 256) in;
layout(binding = 0) readonly buffer S { float scores[]; };
layout(binding = 1) readonly buffer I { int idx[]; };
layout(binding = 2) readonly buffer PI { int plain[]; };  // plain_idx (0) or pos (1)
layout(binding = 3) buffer L { float load[]; };           // load (0) or dscores (2)
layout(binding = 4) buffer D { double acc[]; };           // stats (1) or loss (3)
layout(push_constant) uniform P {
  uint N, E, K, T, mode, os, oi, op, ol, oa;
  float alpha, grad_scale;
} p;

shared double fsh[1024];
shared double psh[1024];
shared double part[256];

double z_of(uint t) {
  double z = 0;
  for (uint e = 0; e < p.E; ++e) z += double(scores[p.os + t * p.E + e]);
  return z;
}

// f_e and P_e of sequence b into fsh / psh (thread e strided), then a barrier.
void sequence_terms(uint b) {
  const uint tid = gl_LocalInvocationID.x;
  for (uint e = tid; e < p.E; e += 256) {
    uint count = 0;
    double P = 0;
    for (uint t = b * p.T; t < (b + 1) * p.T; ++t) {
      for (uint k = 0; k < p.K; ++k) count += uint(idx[p.oi + t * p.K + k]) == e ? 1u : 0u;
      P += double(scores[p.os + t * p.E + e]) / z_of(t) / double(p.T);
    }
    fsh[e] = double(count) * double(p.E) / double(p.K * p.T);
    psh[e] = P;
  }
  barrier();
}

void main() {
  const uint tid = gl_LocalInvocationID.x;
  if (p.mode == 0) {
    const uint e = gl_GlobalInvocationID.x;
    if (e >= p.E) return;
    uint c0 = 0, c3 = 0;
    for (uint i = 0; i < p.N * p.K; ++i) {
      c0 += uint(idx[p.oi + i]) == e ? 1u : 0u;
      c3 += uint(plain[p.op + i]) == e ? 1u : 0u;
    }
    double s1 = 0, s2 = 0;
    for (uint n = 0; n < p.N; ++n) {
      const double v = double(scores[p.os + n * p.E + e]);
      s1 += v;
      s2 += v * v;
    }
    load[p.ol + e] += float(c0);
    load[p.ol + 3 * p.E + e] += float(c3);
    load[p.ol + p.E + e] = float(double(load[p.ol + p.E + e]) + s1);
    load[p.ol + 2 * p.E + e] = float(double(load[p.ol + 2 * p.E + e]) + s2);
  } else if (p.mode == 1) {
    double h = 0, dropped = 0;
    for (uint n = tid; n < p.N; n += 256) {
      const double z = z_of(n);
      for (uint e = 0; e < p.E; ++e) {
        const double q = double(scores[p.os + n * p.E + e]) / z;
        // GLSL has no f64 log: the entropy is a statistic, f32 log serves.
        if (q > 0) h -= q * double(log(float(q)));
      }
    }
    for (uint i = tid; i < p.N * p.K; i += 256) dropped += plain[p.op + i] < 0 ? 1.0 : 0.0;
    part[tid] = h;
    barrier();
    for (uint s = 128; s > 0; s >>= 1) {
      if (tid < s) part[tid] += part[tid + s];
      barrier();
    }
    const double hsum = part[0];
    barrier();
    part[tid] = dropped;
    barrier();
    for (uint s = 128; s > 0; s >>= 1) {
      if (tid < s) part[tid] += part[tid + s];
      barrier();
    }
    if (tid == 0) {
      acc[p.oa] += hsum;
      acc[p.oa + 1] += part[0];
    }
  } else if (p.mode == 2) {
    const uint b = gl_WorkGroupID.x, B = p.N / p.T;
    sequence_terms(b);
    const double scale = double(p.alpha) / double(p.T * B);
    for (uint i = tid; i < p.T * p.E; i += 256) {
      const uint t = b * p.T + i / p.E, e = i % p.E;
      const double z = z_of(t);
      double dot = 0;
      for (uint f = 0; f < p.E; ++f) dot += scale * fsh[f] * double(scores[p.os + t * p.E + f]) / z;
      load[p.ol + t * p.E + e] = float(double(p.grad_scale) * (scale * fsh[e] - dot) / z);
    }
  } else {
    const uint B = p.N / p.T;
    double total = 0;
    for (uint b = 0; b < B; ++b) {
      sequence_terms(b);
      double s = 0;
      for (uint e = tid; e < p.E; e += 256) s += double(p.alpha) * fsh[e] * psh[e];
      part[tid] = s;
      barrier();
      for (uint h = 128; h > 0; h >>= 1) {
        if (tid < h) part[tid] += part[tid + h];
        barrier();
      }
      total += part[0];
      barrier();
    }
    if (tid == 0) acc[p.oa] += total / double(B);
  }
}
