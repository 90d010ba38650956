#version 450
// Mixture-of-experts routing (backend.h's MoeRouteArgs), one thread per
// token, all math f32.
// Forward: scores = sigmoid(logits) or the row's softmax; the K largest keys
//   score + bias (+ jitter) by repeated selection, equal keys to the smaller
//   expert id (the oracle's stable sort); w = scale * score (/ the selected
//   sum when norm_topk). Jitter is route_jitter(): philox4x32 as core/rng.cpp,
//   with `precise` so no fused multiply-add changes its bits.
// Backward: dlogits += the gradient through the scores of sum(dw * w) plus
//   dscores (when given); ds[e] is recomputed per expert, no local array.
layout(local_size_x = 256) in;
layout(binding = 0) readonly buffer A { float in0[]; };  // logits (fwd) or dw (bwd)
layout(binding = 1) readonly buffer B { float in1[]; };  // bias (fwd) or dscores (bwd)
layout(binding = 2) buffer S { float scores[]; };
layout(binding = 3) buffer I { int idx[]; };
layout(binding = 4) buffer O { float out0[]; };  // w (fwd) or dlogits (bwd)
layout(push_constant) uniform P {
  uint N, E, K, sigmoid_gate, norm_topk, has_in1, backward, seed_lo, seed_hi;
  float scale, noise;
  uint o0, o1, os, oi, oo;
} p;

uvec4 philox(uvec2 key, uvec4 c) {
  for (int r = 0; r < 10; ++r) {
    uint hi0, lo0, hi1, lo1;
    umulExtended(0xD2511F53u, c.x, hi0, lo0);
    umulExtended(0xCD9E8D57u, c.z, hi1, lo1);
    c = uvec4(hi1 ^ c.y ^ key.x, lo1, hi0 ^ c.w ^ key.y, lo0);
    key += uvec2(0x9E3779B9u, 0xBB67AE85u);
  }
  return c;
}
// route_jitter(a, n, e): noise * (2 u - 1), u = Rng(seed, 0).uniform(n * E + e).
float jitter(uint n, uint e) {
  const uint ctr = n * p.E + e;  // the counter's high word is 0 below 2^32 slots
  const uvec4 w = philox(uvec2(p.seed_lo, p.seed_hi), uvec4(ctr, 0u, 0u, 0u));
  precise float u = float(w.x >> 8) * (1.0 / 16777216.0);
  precise float r = p.noise * (2.0 * u - 1.0);
  return r;
}

float key_of(uint n, uint e) {
  precise float k = scores[p.os + n * p.E + e];
  if (p.has_in1 != 0) k = k + in1[p.o1 + e];
  if (p.noise > 0.0) k = k + jitter(n, e);
  return k;
}

void main() {
  for (uint n = gl_GlobalInvocationID.x; n < p.N; n += gl_NumWorkGroups.x * 256) {
    const uint row = n * p.E;
    if (p.backward == 0) {
      if (p.sigmoid_gate != 0) {
        for (uint e = 0; e < p.E; ++e) scores[p.os + row + e] = 1.0 / (1.0 + exp(-in0[p.o0 + row + e]));
      } else {
        float mx = -1.0 / 0.0, z = 0;
        for (uint e = 0; e < p.E; ++e) mx = max(mx, in0[p.o0 + row + e]);
        for (uint e = 0; e < p.E; ++e) z += exp(in0[p.o0 + row + e] - mx);
        for (uint e = 0; e < p.E; ++e) scores[p.os + row + e] = exp(in0[p.o0 + row + e] - mx) / z;
      }
      // Selection: the k-th pick is the largest key below the (k-1)-th in
      // (key desc, id asc) order, so no "taken" flags are needed.
      float prev_key = 1.0 / 0.0;
      int prev_id = -1;
      float sum = 0;
      for (uint k = 0; k < p.K; ++k) {
        int best = -1;
        float bk = 0;
        for (uint e = 0; e < p.E; ++e) {
          const float ke = key_of(n, e);
          const bool after = ke < prev_key || (ke == prev_key && int(e) > prev_id);
          if (!after) continue;
          if (best < 0 || ke > bk) {
            best = int(e);
            bk = ke;
          }
        }
        idx[p.oi + n * p.K + k] = best;
        sum += scores[p.os + row + uint(best)];
        prev_key = bk;
        prev_id = best;
      }
      for (uint k = 0; k < p.K; ++k) {
        const float s = scores[p.os + row + uint(idx[p.oi + n * p.K + k])];
        out0[p.oo + n * p.K + k] = p.scale * (p.norm_topk != 0 ? s / sum : s);
      }
      continue;
    }
    // backward
    float S = 0, gs = 0;
    for (uint k = 0; k < p.K; ++k) {
      const float s = scores[p.os + row + uint(idx[p.oi + n * p.K + k])];
      S += s;
      gs += in0[p.o0 + n * p.K + k] * s;
    }
    float dot = 0;
    for (uint pass = 0; pass < 2; ++pass) {
      for (uint e = 0; e < p.E; ++e) {
        float ds = p.has_in1 != 0 ? in1[p.o1 + row + e] : 0.0;
        for (uint k = 0; k < p.K; ++k)
          if (uint(idx[p.oi + n * p.K + k]) == e) {
            const float g = in0[p.o0 + n * p.K + k];
            ds += p.norm_topk != 0 ? p.scale * (g - gs / S) / S : p.scale * g;
          }
        const float s = scores[p.os + row + e];
        if (p.sigmoid_gate != 0) {
          if (pass == 1) out0[p.oo + row + e] += ds * s * (1.0 - s);
        } else if (pass == 0) {
          dot += ds * s;
        } else {
          out0[p.oo + row + e] += s * (ds - dot);
        }
      }
    }
  }
}
