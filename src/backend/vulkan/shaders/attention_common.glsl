// Shared by attention_forward.comp and attention_backward.comp: the buffers
// (f32 or bf16 words), backend.h's AttentionArgs as push constants, and the
// row addressing. Query row (b, t, h) sits at absolute position Tk - Tq + t
// and sees keys 0..Tk-Tq+t; query head h reads kv head h / (NH / NKV).
#extension GL_EXT_shader_16bit_storage : require
#extension GL_GOOGLE_include_directive : require
#include "bf16.glsl"

layout(local_size_x = 256) in;
layout(push_constant) uniform P {
  uint B, Tq, Tk, NH, NKV, HS;
  uint q_row_stride, q_batch_stride, kv_row_stride, kv_batch_stride;
  float scale;
  uint bf16, oq, ok, ov, oo, olse, odo, odq, odk, odv;
  uint mode;  // attention_backward.comp: 0 dq, 1 dk and dv
} p;

uint q_off(uint b, uint t, uint h) { return b * p.q_batch_stride + t * p.q_row_stride + h * p.HS; }
uint kv_off(uint b, uint j, uint kh) { return b * p.kv_batch_stride + j * p.kv_row_stride + kh * p.HS; }
uint o_off(uint b, uint t, uint h) { return ((b * p.Tq + t) * p.NH + h) * p.HS; }
uint lse_off(uint b, uint t, uint h) { return (b * p.NH + h) * p.Tq + t; }

shared float red[256];
// Fixed-tree sum over the workgroup; every thread gets the result.
float tree_sum(float v) {
  const uint t = gl_LocalInvocationID.x;
  red[t] = v;
  barrier();
  for (uint s = 128; s > 0; s >>= 1) {
    if (t < s) red[t] += red[t + s];
    barrier();
  }
  const float r = red[0];
  barrier();
  return r;
}
