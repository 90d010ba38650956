#version 450
// Tokens to expert order and back (backend.h), f32 or bf16 rows of C, with
// pos (N, K) i32 naming each slot's row in the permuted buffer (-1 dropped).
//   mode 0 permute fwd:    xp[pos[n,k], :] = x[n, :]          (thread per slot column)
//   mode 1 permute bwd:    dx[n, :] += sum_k dxp[pos[n,k], :]  (thread per token column, k asc)
//   mode 2 unpermute fwd:  y[n, :] = sum_k w[n,k] yp[pos[n,k], :]
//   mode 3 unpermute bwd:  dyp[pos[n,k], :] += w[n,k] dy[n, :]  (slot rows are distinct)
//   mode 4 unpermute bwd:  dw[n,k] += dy[n, :] . yp[pos[n,k], :] (thread per slot, c asc)
#extension GL_EXT_shader_16bit_storage : require
#extension GL_GOOGLE_include_directive : require
#include "bf16.glsl"

layout(local_size_x = 256) in;
layout(binding = 0) readonly buffer Pos { int pos[]; };
layout(binding = 1) readonly buffer Wt { float w[]; };
layout(binding = 2) readonly buffer A32 { float a32[]; };  // x, dxp, yp
layout(binding = 2) readonly buffer A16 { uint16_t a16[]; };
layout(binding = 3) readonly buffer B32 { float b32[]; };  // dy (modes 3, 4)
layout(binding = 3) readonly buffer B16 { uint16_t b16[]; };
layout(binding = 4) buffer D32 { float d32[]; };  // xp, dx, y, dyp
layout(binding = 4) buffer D16 { uint16_t d16[]; };
layout(binding = 5) buffer DW { float dw[]; };
layout(push_constant) uniform P { uint N, K, C, bf16, mode, op, ow, oa, ob, od, odw; } p;

float lda(uint i) { return p.bf16 != 0 ? bf16_to_f32(uint(a16[p.oa + i])) : a32[p.oa + i]; }
float ldb(uint i) { return p.bf16 != 0 ? bf16_to_f32(uint(b16[p.ob + i])) : b32[p.ob + i]; }
float ldd(uint i) { return p.bf16 != 0 ? bf16_to_f32(uint(d16[p.od + i])) : d32[p.od + i]; }
void std_(uint i, float v) {
  if (p.bf16 != 0) d16[p.od + i] = uint16_t(f32_to_bf16(v));
  else d32[p.od + i] = v;
}

void main() {
  const uint stride = gl_NumWorkGroups.x * 256;
  if (p.mode == 0 || p.mode == 3) {
    const uint total = p.N * p.K * p.C;
    for (uint e = gl_GlobalInvocationID.x; e < total; e += stride) {
      const uint slot = e / p.C, c = e % p.C, n = slot / p.K;
      const int r = pos[p.op + slot];
      if (r < 0) continue;
      if (p.mode == 0) std_(uint(r) * p.C + c, lda(n * p.C + c));
      else std_(uint(r) * p.C + c, ldd(uint(r) * p.C + c) + w[p.ow + slot] * ldb(n * p.C + c));
    }
    return;
  }
  if (p.mode == 4) {
    for (uint slot = gl_GlobalInvocationID.x; slot < p.N * p.K; slot += stride) {
      const int r = pos[p.op + slot];
      if (r < 0) continue;
      const uint n = slot / p.K;
      float dot = 0;
      for (uint c = 0; c < p.C; ++c) dot += ldb(n * p.C + c) * lda(uint(r) * p.C + c);
      dw[p.odw + slot] += dot;
    }
    return;
  }
  const uint total = p.N * p.C;
  for (uint e = gl_GlobalInvocationID.x; e < total; e += stride) {
    const uint n = e / p.C, c = e % p.C;
    float acc = p.mode == 1 ? ldd(e) : 0.0;
    for (uint k = 0; k < p.K; ++k) {
      const int r = pos[p.op + n * p.K + k];
      if (r < 0) continue;
      const float v = lda(uint(r) * p.C + c);
      acc += p.mode == 1 ? v : w[p.ow + n * p.K + k] * v;
    }
    std_(e, acc);
  }
}
