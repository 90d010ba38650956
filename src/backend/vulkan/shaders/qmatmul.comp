#version 450
// y[M, N] f32 = x @ dequant(W)^T over integer dot products, with x already
// quantized by quant.comp (I8 rows with a scale per row, or Q8_0 blocks):
//   I8:        y = float(dot * sx[m] * sw[n]) with the product in f64,
//   Q8_0/Q4_0: y = float(sum over blocks of isum * dw * dx), f64 sum,
// exactly the oracle's formulas. One thread per output element.
#extension GL_GOOGLE_include_directive : require
#include "quant.glsl"

layout(local_size_x = 256) in;
layout(binding = 0) readonly buffer XQ { int8_t xq[]; };
layout(binding = 1) readonly buffer XU { uint8_t xu[]; };
layout(binding = 2) readonly buffer XS { float xs[]; };
layout(binding = 3) readonly buffer WQ { int8_t wq[]; };
layout(binding = 4) readonly buffer WU { uint8_t wu[]; };
layout(binding = 5) readonly buffer WS { float ws[]; };
layout(binding = 6) writeonly buffer Y { float y[]; };
layout(push_constant) uniform P { uint M, N, K, qdt, ox, oxs, ow, ows, oy; } p;

float x_d(uint byte) { return f16_to_f32(uint(xu[p.ox + byte]) | (uint(xu[p.ox + byte + 1]) << 8)); }
float w_d(uint byte) { return f16_to_f32(uint(wu[p.ow + byte]) | (uint(wu[p.ow + byte + 1]) << 8)); }

void main() {
  const uint total = p.M * p.N;
  const uint nb = p.K / QK;
  for (uint e = gl_GlobalInvocationID.x; e < total; e += gl_NumWorkGroups.x * 256) {
    const uint m = e / p.N, n = e % p.N;
    if (p.qdt == 0) {
      int dot = 0;
      for (uint k = 0; k < p.K; ++k) dot += int(xq[p.ox + m * p.K + k]) * int(wq[p.ow + n * p.K + k]);
      y[p.oy + e] = float(double(dot) * double(xs[p.oxs + m]) * double(ws[p.ows + n]));
      continue;
    }
    double acc = 0;
    for (uint b = 0; b < nb; ++b) {
      const uint xb = (m * nb + b) * 34;
      int isum = 0;
      float dw;
      if (p.qdt == 1) {
        const uint wb = (n * nb + b) * 34;
        for (uint j = 0; j < QK; ++j) isum += int(wq[p.ow + wb + 2 + j]) * int(xq[p.ox + xb + 2 + j]);
        dw = w_d(wb);
      } else {
        const uint wb = (n * nb + b) * 18;
        for (uint j = 0; j < QK; ++j) {
          const uint byte = uint(wu[p.ow + wb + 2 + (j % 16)]);
          const int code = int(j < 16 ? byte & 0xfu : byte >> 4) - 8;
          isum += code * int(xq[p.ox + xb + 2 + j]);
        }
        dw = w_d(wb);
      }
      acc += double(isum) * double(dw) * double(x_d(xb));
    }
    y[p.oy + e] = float(acc);
  }
}
