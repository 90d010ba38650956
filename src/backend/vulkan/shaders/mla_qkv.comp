#version 450
// Multi-head latent attention's q/k/v assembly (backend.h's mla_qkv_*), f32
// or bf16 storage, f32 math. D = nope + rope, a qkv row is 3 * NH * D wide.
// mode 0: qkv from q, kv, kpe (one thread per qkv element);
// mode 1: dq += g (nope columns) or g_rope (rope columns);
// mode 2: dkv += g's key nope and value columns;
// mode 3: dkpe += the sum over key heads, ascending, of g_rope's rope columns.
#extension GL_EXT_shader_16bit_storage : require
#extension GL_GOOGLE_include_directive : require
#include "bf16.glsl"

layout(local_size_x = 256) in;
layout(binding = 0) readonly buffer A32 { float a32[]; };  // q (mode 0) or g
layout(binding = 0) readonly buffer A16 { uint16_t a16[]; };
layout(binding = 1) readonly buffer B32 { float b32[]; };  // kv (mode 0) or g_rope
layout(binding = 1) readonly buffer B16 { uint16_t b16[]; };
layout(binding = 2) readonly buffer C32 { float c32[]; };  // kpe (mode 0)
layout(binding = 2) readonly buffer C16 { uint16_t c16[]; };
layout(binding = 3) buffer O32 { float o32[]; };  // qkv, dq, dkv or dkpe
layout(binding = 3) buffer O16 { uint16_t o16[]; };
layout(push_constant) uniform P { uint N, NH, nope, rope, v, bf16, mode, oa, ob, oc, oo; } p;

float lda(uint i) { return p.bf16 != 0 ? bf16_to_f32(uint(a16[p.oa + i])) : a32[p.oa + i]; }
float ldb(uint i) { return p.bf16 != 0 ? bf16_to_f32(uint(b16[p.ob + i])) : b32[p.ob + i]; }
float ldc(uint i) { return p.bf16 != 0 ? bf16_to_f32(uint(c16[p.oc + i])) : c32[p.oc + i]; }
float ldo(uint i) { return p.bf16 != 0 ? bf16_to_f32(uint(o16[p.oo + i])) : o32[p.oo + i]; }
void sto(uint i, float x) {
  if (p.bf16 != 0)
    o16[p.oo + i] = uint16_t(f32_to_bf16(x));
  else
    o32[p.oo + i] = x;
}

void main() {
  const uint D = p.nope + p.rope, row = 3 * p.NH * D, kvw = p.nope + p.v;
  const uint n = p.mode == 0 ? p.N * row
               : p.mode == 1 ? p.N * p.NH * D
               : p.mode == 2 ? p.N * p.NH * kvw
                             : p.N * p.rope;
  const uint stride = gl_NumWorkGroups.x * 256;
  for (uint i = gl_GlobalInvocationID.x; i < n; i += stride) {
    if (p.mode == 0) {
      const uint t = i / row, c = i - t * row, part = c / (p.NH * D);
      const uint h = (c - part * p.NH * D) / D, j = c - part * p.NH * D - h * D;
      const uint kvh = t * p.NH * kvw + h * kvw;
      float x = 0.0;
      if (part == 0)
        x = lda(t * p.NH * D + c);
      else if (part == 1)
        x = j < p.nope ? ldb(kvh + j) : ldc(t * p.rope + j - p.nope);
      else if (j < p.v)
        x = ldb(kvh + p.nope + j);
      sto(i, x);
    } else if (p.mode == 1) {
      const uint t = i / (p.NH * D), c = i - t * p.NH * D, j = c % D;
      const float g = j < p.nope ? lda(t * row + c) : ldb(t * row + c);
      sto(i, ldo(i) + g);
    } else if (p.mode == 2) {
      const uint t = i / (p.NH * kvw), c = i - t * p.NH * kvw, h = c / kvw, j = c - h * kvw;
      const uint src = j < p.nope ? t * row + (p.NH + h) * D + j
                                  : t * row + (2 * p.NH + h) * D + j - p.nope;
      sto(i, ldo(i) + lda(src));
    } else {
      const uint t = i / p.rope, j = i - t * p.rope;
      float acc = ldo(i);
      for (uint h = 0; h < p.NH; ++h) acc += ldb(t * row + (p.NH + h) * D + p.nope + j);
      sto(i, acc);
    }
  }
}
