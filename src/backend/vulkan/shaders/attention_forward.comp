#version 450
// Causal attention forward, one workgroup per query row (b, t, h): pass 1
// forms each score once per key (threads own keys t, t+256, ...) with an
// online max/sum, merged by a fixed tree into the log-sum-exp; pass 2 walks
// the keys in chunks of 256, stages their probabilities in shared memory and
// each thread sums p_j * v[j, d] over its columns d in ascending j. No T x T
// matrix, no atomics, the same bits every run. HS <= 512.
#include "attention_common.glsl"

layout(binding = 0) readonly buffer Q32 { float q32[]; };
layout(binding = 0) readonly buffer Q16 { uint16_t q16[]; };
layout(binding = 1) readonly buffer K32 { float k32[]; };
layout(binding = 1) readonly buffer K16 { uint16_t k16[]; };
layout(binding = 2) readonly buffer V32 { float v32[]; };
layout(binding = 2) readonly buffer V16 { uint16_t v16[]; };
layout(binding = 3) writeonly buffer O32 { float o32[]; };
layout(binding = 3) writeonly buffer O16 { uint16_t o16[]; };
layout(binding = 4) writeonly buffer L { float lse[]; };

float ldq(uint i) { return p.bf16 != 0 ? bf16_to_f32(uint(q16[p.oq + i])) : q32[p.oq + i]; }
float ldk(uint i) { return p.bf16 != 0 ? bf16_to_f32(uint(k16[p.ok + i])) : k32[p.ok + i]; }
float ldv(uint i) { return p.bf16 != 0 ? bf16_to_f32(uint(v16[p.ov + i])) : v32[p.ov + i]; }

shared float qs[512];
shared float pj[256];
shared float mx[256];

void main() {
  const uint t = gl_LocalInvocationID.x;
  const uint rows = p.B * p.Tq * p.NH;
  for (uint row = gl_WorkGroupID.x; row < rows; row += gl_NumWorkGroups.x) {
    const uint h = row % p.NH, tq = (row / p.NH) % p.Tq, b = row / (p.NH * p.Tq);
    const uint kh = h / (p.NH / p.NKV), last = p.Tk - p.Tq + tq;
    const uint qo = q_off(b, tq, h);
    for (uint d = t; d < p.HS; d += 256) qs[d] = ldq(qo + d);
    barrier();
    float m = -1.0 / 0.0, s = 0;
    for (uint j = t; j <= last; j += 256) {
      const uint ko = kv_off(b, j, kh);
      float dot = 0;
      for (uint d = 0; d < p.HS; ++d) dot += qs[d] * ldk(ko + d);
      dot *= p.scale;
      const float nm = max(m, dot);
      s = s * exp(m - nm) + exp(dot - nm);
      m = nm;
    }
    mx[t] = m;
    red[t] = s;
    barrier();
    for (uint w = 128; w > 0; w >>= 1) {
      if (t < w) {
        const float m1 = mx[t], m2 = mx[t + w];
        const float nm = max(m1, m2);
        if (nm != -1.0 / 0.0) red[t] = red[t] * exp(m1 - nm) + red[t + w] * exp(m2 - nm);
        mx[t] = nm;
      }
      barrier();
    }
    const float l = mx[0] + log(red[0]);
    barrier();
    if (t == 0) lse[p.olse + lse_off(b, tq, h)] = l;
    float acc0 = 0, acc1 = 0;
    for (uint j0 = 0; j0 <= last; j0 += 256) {
      const uint j = j0 + t;
      if (j <= last) {
        const uint ko = kv_off(b, j, kh);
        float dot = 0;
        for (uint d = 0; d < p.HS; ++d) dot += qs[d] * ldk(ko + d);
        pj[t] = exp(dot * p.scale - l);
      }
      barrier();
      const uint n = min(256u, last + 1 - j0);
      for (uint jj = 0; jj < n; ++jj) {
        const uint vo = kv_off(b, j0 + jj, kh);
        if (t < p.HS) acc0 += pj[jj] * ldv(vo + t);
        if (t + 256 < p.HS) acc1 += pj[jj] * ldv(vo + t + 256);
      }
      barrier();
    }
    const uint oo = o_off(b, tq, h);
    if (p.bf16 != 0) {
      if (t < p.HS) o16[p.oo + oo + t] = uint16_t(f32_to_bf16(acc0));
      if (t + 256 < p.HS) o16[p.oo + oo + t + 256] = uint16_t(f32_to_bf16(acc1));
    } else {
      if (t < p.HS) o32[p.oo + oo + t] = acc0;
      if (t + 256 < p.HS) o32[p.oo + oo + t + 256] = acc1;
    }
    barrier();
  }
}
