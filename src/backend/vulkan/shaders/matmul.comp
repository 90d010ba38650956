#version 450
// C[b] = alpha * op(A[b]) @ op(B[b]) + beta * C[b] (backend.h's MatmulArgs).
// 32x32 output tiles staged through shared memory in 16-deep K slices; each
// of the 16x16 threads owns a 2x2 block and sums k in ascending order, so the
// result does not depend on scheduling. A/B are f32 or bf16 words, C f32 or bf16.
#extension GL_EXT_shader_16bit_storage : require
#extension GL_GOOGLE_include_directive : require
#include "bf16.glsl"

layout(local_size_x = 16, local_size_y = 16) in;
layout(binding = 0) readonly buffer A32 { float a32[]; };
layout(binding = 0) readonly buffer A16 { uint16_t a16[]; };
layout(binding = 1) readonly buffer B32 { float b32[]; };
layout(binding = 1) readonly buffer B16 { uint16_t b16[]; };
layout(binding = 2) buffer C32 { float c32[]; };
layout(binding = 2) buffer C16 { uint16_t c16[]; };

layout(push_constant) uniform P {
  uint M, N, K, lda, ldb, ldc, stride_a, stride_b, stride_c;
  uint trans_a, trans_b, ab_bf16, c_bf16;
  float alpha, beta;
  uint off_a, off_b, off_c;  // element offsets into the bound ranges
} p;

const uint TM = 32, TN = 32, TK = 16;
shared float As[TK][TM];
shared float Bs[TK][TN];

float load_a(uint i) { return p.ab_bf16 != 0 ? bf16_to_f32(uint(a16[i])) : a32[i]; }
float load_b(uint i) { return p.ab_bf16 != 0 ? bf16_to_f32(uint(b16[i])) : b32[i]; }

void main() {
  const uint tx = gl_LocalInvocationID.x, ty = gl_LocalInvocationID.y;
  const uint tid = ty * 16 + tx;
  const uint m0 = gl_WorkGroupID.y * TM, n0 = gl_WorkGroupID.x * TN;
  const uint batch = gl_WorkGroupID.z;
  const uint abase = p.off_a + batch * p.stride_a, bbase = p.off_b + batch * p.stride_b;
  const uint cbase = p.off_c + batch * p.stride_c;
  float acc[2][2] = {{0, 0}, {0, 0}};
  for (uint k0 = 0; k0 < p.K; k0 += TK) {
    // 512 elements of each tile, two per thread.
    for (uint e = tid; e < TK * TM; e += 256) {
      const uint kk = e / TM, mm = e % TM;
      const uint m = m0 + mm, k = k0 + kk;
      float v = 0;
      if (m < p.M && k < p.K) v = load_a(abase + (p.trans_a != 0 ? k * p.lda + m : m * p.lda + k));
      As[kk][mm] = v;
      const uint n = n0 + mm;
      float w = 0;
      if (n < p.N && k < p.K) w = load_b(bbase + (p.trans_b != 0 ? n * p.ldb + k : k * p.ldb + n));
      Bs[kk][mm] = w;
    }
    barrier();
    for (uint kk = 0; kk < TK; ++kk) {
      const float a0 = As[kk][ty * 2], a1 = As[kk][ty * 2 + 1];
      const float b0 = Bs[kk][tx * 2], b1 = Bs[kk][tx * 2 + 1];
      acc[0][0] += a0 * b0;
      acc[0][1] += a0 * b1;
      acc[1][0] += a1 * b0;
      acc[1][1] += a1 * b1;
    }
    barrier();
  }
  for (uint i = 0; i < 2; ++i) {
    const uint m = m0 + ty * 2 + i;
    if (m >= p.M) continue;
    for (uint j = 0; j < 2; ++j) {
      const uint n = n0 + tx * 2 + j;
      if (n >= p.N) continue;
      const uint ci = cbase + m * p.ldc + n;
      float r = p.alpha * acc[i][j];
      // beta == 0 means C is not read (it may hold NaN), as in BLAS and ref.
      if (p.beta != 0) r += p.beta * (p.c_bf16 != 0 ? bf16_to_f32(uint(c16[ci])) : c32[ci]);
      if (p.c_bf16 != 0) c16[ci] = uint16_t(f32_to_bf16(r));
      else c32[ci] = r;
    }
  }
}
