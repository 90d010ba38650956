#version 450
// Weight quantization (backend.h) of w (N, K) f32 rows, and dequantization.
//   mode 0, I8:   one workgroup per row: scale = max|w| / 127 (fixed max
//                 tree), q = round(w / scale) (0 for an all-zero row).
//   mode 0, Q8_0: one thread per block of 32: d = amax / 127, stored as f16.
//   mode 0, Q4_0: one thread per block: m = the first element of largest
//                 magnitude, d = m / -8, q = min(15, int(w / d + 8.5)).
//   mode 1:       w = q * scale (dequantize), one thread per element.
// The integer codes use the f32 scale before it is rounded to f16, as the
// oracle and llama.cpp do, so exports are bit-identical.
#extension GL_GOOGLE_include_directive : require
#include "quant.glsl"

layout(local_size_x = 256) in;
layout(binding = 0) buffer W { float w[]; };
layout(binding = 1) buffer Q8 { int8_t q8[]; };
layout(binding = 1) buffer U8 { uint8_t u8[]; };
layout(binding = 2) buffer S { float scale[]; };
// qdt: 0 I8, 1 Q8_0, 2 Q4_0
layout(push_constant) uniform P { uint N, K, qdt, mode, ow, oq, os; } p;

shared float amax_part[256];

void put_f16(uint byte, uint h) {
  u8[p.oq + byte] = uint8_t(h & 0xffu);
  u8[p.oq + byte + 1] = uint8_t(h >> 8);
}
uint get_f16(uint byte) { return uint(u8[p.oq + byte]) | (uint(u8[p.oq + byte + 1]) << 8); }

void main() {
  const uint t = gl_LocalInvocationID.x;
  const uint nb = p.K / QK;
  if (p.mode == 1) {
    const uint total = p.N * p.K;
    for (uint e = gl_GlobalInvocationID.x; e < total; e += gl_NumWorkGroups.x * 256) {
      const uint i = e / p.K, k = e % p.K;
      float v;
      if (p.qdt == 0) {
        v = float(int(q8[p.oq + e])) * scale[p.os + i];
      } else if (p.qdt == 1) {
        const uint blk = (i * nb + k / QK) * 34;
        v = float(int(q8[p.oq + blk + 2 + k % QK])) * f16_to_f32(get_f16(blk));
      } else {
        const uint blk = (i * nb + k / QK) * 18, j = k % QK;
        const uint byte = uint(u8[p.oq + blk + 2 + (j % 16)]);
        const int code = int(j < 16 ? byte & 0xfu : byte >> 4);
        v = float(code - 8) * f16_to_f32(get_f16(blk));
      }
      w[p.ow + e] = v;
    }
    return;
  }
  if (p.qdt == 0) {
    for (uint i = gl_WorkGroupID.x; i < p.N; i += gl_NumWorkGroups.x) {
      float a = 0;
      for (uint k = t; k < p.K; k += 256) a = max(a, abs(w[p.ow + i * p.K + k]));
      amax_part[t] = a;
      barrier();
      for (uint h = 128; h > 0; h >>= 1) {
        if (t < h) amax_part[t] = max(amax_part[t], amax_part[t + h]);
        barrier();
      }
      const float s = div(amax_part[0], 127.0);
      barrier();
      if (t == 0) scale[p.os + i] = s;
      for (uint k = t; k < p.K; k += 256)
        q8[p.oq + i * p.K + k] = int8_t(s == 0.0 ? 0 : round_i8(div(w[p.ow + i * p.K + k], s)));
    }
    return;
  }
  const uint blocks = p.N * nb;
  for (uint b = gl_GlobalInvocationID.x; b < blocks; b += gl_NumWorkGroups.x * 256) {
    const uint src = p.ow + b * QK;
    if (p.qdt == 1) {
      float a = 0;
      for (uint j = 0; j < QK; ++j) a = max(a, abs(w[src + j]));
      const float d = div(a, 127.0);
      put_f16(b * 34, f32_to_f16(d));
      for (uint j = 0; j < QK; ++j)
        q8[p.oq + b * 34 + 2 + j] = int8_t(d == 0.0 ? 0 : round_i8(div(w[src + j], d)));
    } else {
      float a = 0, m = 0;
      for (uint j = 0; j < QK; ++j)
        if (abs(w[src + j]) > a) {
          a = abs(w[src + j]);
          m = w[src + j];
        }
      const float d = div(m, -8.0);
      put_f16(b * 18, f32_to_f16(d));
      for (uint j = 0; j < QK / 2; ++j) {
        int v0 = d == 0.0 ? 8 : int(div(w[src + j], d) + 8.5);
        int v1 = d == 0.0 ? 8 : int(div(w[src + j + 16], d) + 8.5);
        v0 = clamp(v0, 0, 15);
        v1 = clamp(v1, 0, 15);
        u8[p.oq + b * 18 + 2 + j] = uint8_t(uint(v0) | (uint(v1) << 4));
      }
    }
  }
}
