#version 450
// Causal attention backward, accumulating into dq, dk, dv, with the saved
// lse. With p_tj = exp(scale q_t.k_j - lse_t), D_t = dout_t . o_t and
// ds_tj = p_tj (dout_t . v_j - D_t):
//   mode 0, one workgroup per query row (b, t, h): dq_t += scale sum_j ds_tj k_j,
//   mode 1, one workgroup per kv row (b, j, kh): dv_j += sum p_tj dout_t and
//           dk_j += scale sum ds_tj q_t over the heads of the group and t in order.
// Each sum runs over chunks of 256 staged in shared memory in a fixed order:
// no atomics, the same bits every run. HS <= 512.
#include "attention_common.glsl"

layout(binding = 0) readonly buffer Q32 { float q32[]; };
layout(binding = 0) readonly buffer Q16 { uint16_t q16[]; };
layout(binding = 1) readonly buffer K32 { float k32[]; };
layout(binding = 1) readonly buffer K16 { uint16_t k16[]; };
layout(binding = 2) readonly buffer V32 { float v32[]; };
layout(binding = 2) readonly buffer V16 { uint16_t v16[]; };
layout(binding = 3) readonly buffer O32 { float o32[]; };
layout(binding = 3) readonly buffer O16 { uint16_t o16[]; };
layout(binding = 4) readonly buffer L { float lse[]; };
layout(binding = 5) readonly buffer DO32 { float do32[]; };
layout(binding = 5) readonly buffer DO16 { uint16_t do16[]; };
layout(binding = 6) buffer DQ32 { float dq32[]; };
layout(binding = 6) buffer DQ16 { uint16_t dq16[]; };
layout(binding = 7) buffer DK32 { float dk32[]; };
layout(binding = 7) buffer DK16 { uint16_t dk16[]; };
layout(binding = 8) buffer DV32 { float dv32[]; };
layout(binding = 8) buffer DV16 { uint16_t dv16[]; };

float ldq(uint i) { return p.bf16 != 0 ? bf16_to_f32(uint(q16[p.oq + i])) : q32[p.oq + i]; }
float ldk(uint i) { return p.bf16 != 0 ? bf16_to_f32(uint(k16[p.ok + i])) : k32[p.ok + i]; }
float ldv(uint i) { return p.bf16 != 0 ? bf16_to_f32(uint(v16[p.ov + i])) : v32[p.ov + i]; }
float ldo(uint i) { return p.bf16 != 0 ? bf16_to_f32(uint(o16[p.oo + i])) : o32[p.oo + i]; }
float lddo(uint i) { return p.bf16 != 0 ? bf16_to_f32(uint(do16[p.odo + i])) : do32[p.odo + i]; }
void add_dq(uint i, float v) {
  if (p.bf16 != 0) dq16[p.odq + i] = uint16_t(f32_to_bf16(bf16_to_f32(uint(dq16[p.odq + i])) + v));
  else dq32[p.odq + i] += v;
}
void add_dk(uint i, float v) {
  if (p.bf16 != 0) dk16[p.odk + i] = uint16_t(f32_to_bf16(bf16_to_f32(uint(dk16[p.odk + i])) + v));
  else dk32[p.odk + i] += v;
}
void add_dv(uint i, float v) {
  if (p.bf16 != 0) dv16[p.odv + i] = uint16_t(f32_to_bf16(bf16_to_f32(uint(dv16[p.odv + i])) + v));
  else dv32[p.odv + i] += v;
}

shared float pj[256];
shared float dsj[256];
shared uint src[256];  // row offset of the staged key (mode 0) or query (mode 1)
shared uint dst[256];  // dout offset of the staged query (mode 1)

// D_t = dout_t . o_t and p_tj, ds_tj for query (b, t, h) against key row ko.
void pair(uint b, uint t, uint h, uint ko, out float pr, out float ds) {
  const uint qo = q_off(b, t, h), oo = o_off(b, t, h);
  float dot = 0, dp = 0, D = 0;
  for (uint d = 0; d < p.HS; ++d) {
    dot += ldq(qo + d) * ldk(ko + d);
    dp += lddo(oo + d) * ldv(ko + d);
    D += lddo(oo + d) * ldo(oo + d);
  }
  pr = exp(dot * p.scale - lse[p.olse + lse_off(b, t, h)]);
  ds = pr * (dp - D);
}

void main() {
  const uint t = gl_LocalInvocationID.x;
  if (p.mode == 0) {
    const uint rows = p.B * p.Tq * p.NH;
    for (uint row = gl_WorkGroupID.x; row < rows; row += gl_NumWorkGroups.x) {
      const uint h = row % p.NH, tq = (row / p.NH) % p.Tq, b = row / (p.NH * p.Tq);
      const uint kh = h / (p.NH / p.NKV), last = p.Tk - p.Tq + tq;
      float a0 = 0, a1 = 0;
      for (uint j0 = 0; j0 <= last; j0 += 256) {
        const uint j = j0 + t;
        if (j <= last) {
          float pr, ds;
          pair(b, tq, h, kv_off(b, j, kh), pr, ds);
          dsj[t] = ds;
        }
        barrier();
        const uint n = min(256u, last + 1 - j0);
        for (uint jj = 0; jj < n; ++jj) {
          const uint ko = kv_off(b, j0 + jj, kh);
          if (t < p.HS) a0 += dsj[jj] * ldk(ko + t);
          if (t + 256 < p.HS) a1 += dsj[jj] * ldk(ko + t + 256);
        }
        barrier();
      }
      const uint qo = q_off(b, tq, h);
      if (t < p.HS) add_dq(qo + t, a0 * p.scale);
      if (t + 256 < p.HS) add_dq(qo + t + 256, a1 * p.scale);
    }
    return;
  }
  // mode 1: kv row (b, j, kh); queries t with Tk - Tq + t >= j, heads of the group.
  const uint G = p.NH / p.NKV;
  const uint rows = p.B * p.Tk * p.NKV;
  for (uint row = gl_WorkGroupID.x; row < rows; row += gl_NumWorkGroups.x) {
    const uint kh = row % p.NKV, j = (row / p.NKV) % p.Tk, b = row / (p.NKV * p.Tk);
    const uint ko = kv_off(b, j, kh);
    const uint shift = p.Tk - p.Tq;
    const uint t_first = j > shift ? j - shift : 0;
    if (t_first >= p.Tq) continue;  // uniform per workgroup: no barrier skipped by part of it
    const uint nt = p.Tq - t_first, total = G * nt;
    float dk0 = 0, dk1 = 0, dv0 = 0, dv1 = 0;
    for (uint e0 = 0; e0 < total; e0 += 256) {
      const uint e = e0 + t;
      if (e < total) {
        const uint h = kh * G + e / nt, tq = t_first + e % nt;
        float pr, ds;
        pair(b, tq, h, ko, pr, ds);
        pj[t] = pr;
        dsj[t] = ds;
        src[t] = q_off(b, tq, h);
        dst[t] = o_off(b, tq, h);
      }
      barrier();
      const uint n = min(256u, total - e0);
      for (uint ee = 0; ee < n; ++ee) {
        if (t < p.HS) {
          dv0 += pj[ee] * lddo(dst[ee] + t);
          dk0 += dsj[ee] * ldq(src[ee] + t);
        }
        if (t + 256 < p.HS) {
          dv1 += pj[ee] * lddo(dst[ee] + t + 256);
          dk1 += dsj[ee] * ldq(src[ee] + t + 256);
        }
      }
      barrier();
    }
    if (t < p.HS) {
      add_dk(ko + t, dk0 * p.scale);
      add_dv(ko + t, dv0);
    }
    if (t + 256 < p.HS) {
      add_dk(ko + t + 256, dk1 * p.scale);
      add_dv(ko + t + 256, dv1);
    }
  }
}
