#version 450
// Decoupled AdamW on f32 master weights (backend.h's AdamWArgs), one element
// per thread; the bias corrections come from the host in f64 (as scalars).
// Optionally writes the updated weights in bf16 as well.
#extension GL_EXT_shader_16bit_storage : require
#extension GL_GOOGLE_include_directive : require
#include "bf16.glsl"

layout(local_size_x = 256) in;
layout(binding = 0) buffer Pm { float param[]; };
layout(binding = 1) readonly buffer G { float grad[]; };
layout(binding = 2) buffer Mm { float m[]; };
layout(binding = 3) buffer Vm { float v[]; };
layout(binding = 4) writeonly buffer P16 { uint16_t p16[]; };
layout(push_constant) uniform P {
  uint n, write_bf16;
  float lr, beta1, beta2, eps, weight_decay, grad_scale, bc1, bc2, keep;
  uint op, og, om, ov, o16;
} p;

void main() {
  for (uint i = gl_GlobalInvocationID.x; i < p.n; i += gl_NumWorkGroups.x * 256) {
    const float g = grad[p.og + i] * p.grad_scale;
    const float mi = p.beta1 * m[p.om + i] + (1.0 - p.beta1) * g;
    const float vi = p.beta2 * v[p.ov + i] + (1.0 - p.beta2) * g * g;
    const float mhat = mi / p.bc1;
    const float vhat = p.keep * (vi / p.bc2) + (1.0 - p.keep) * mhat * mhat;
    const float w = param[p.op + i];
    const float upd = mhat / (sqrt(vhat) + p.eps) + p.weight_decay * w;
    m[p.om + i] = mi;
    v[p.ov + i] = vi;
    const float nw = w - p.lr * upd;
    param[p.op + i] = nw;
    if (p.write_bf16 != 0) p16[p.o16 + i] = uint16_t(f32_to_bf16(nw));
  }
}
