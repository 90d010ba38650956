#version 450
// GELU (tanh approximation, GPT-2's) and SiLU over n elements, f32 or bf16
// storage with f32 math: forward y = f(x), backward dx += dy * f'(x) (the
// backend's accumulate-into-gradients rule). tanh is formed from exp(-2|x|)
// so large inputs cannot overflow into inf/inf.
#extension GL_EXT_shader_16bit_storage : require
#extension GL_GOOGLE_include_directive : require
#include "bf16.glsl"

layout(local_size_x = 256) in;
layout(binding = 0) readonly buffer X32 { float x32[]; };
layout(binding = 0) readonly buffer X16 { uint16_t x16[]; };
layout(binding = 1) readonly buffer D32 { float d32[]; };
layout(binding = 1) readonly buffer D16 { uint16_t d16[]; };
layout(binding = 2) buffer Y32 { float y32[]; };
layout(binding = 2) buffer Y16 { uint16_t y16[]; };
// op: 0 gelu, 1 silu; backward: 0 y = f(x), 1 y += dy * f'(x)
layout(push_constant) uniform P { uint n, bf16, op, backward, ox, od, oy; } p;

const float kC = 0.7978845608028654;  // sqrt(2 / pi)
const float kA = 0.044715;

float stable_tanh(float v) {
  const float e = exp(-2.0 * abs(v));
  return sign(v) * (1.0 - e) / (1.0 + e);
}
float sigmoid(float v) { return 1.0 / (1.0 + exp(-v)); }

float f(float x) {
  if (p.op == 0) return 0.5 * x * (1.0 + stable_tanh(kC * (x + kA * x * x * x)));
  return x * sigmoid(x);
}
float fprime(float x) {
  if (p.op == 0) {
    const float th = stable_tanh(kC * (x + kA * x * x * x));
    return 0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * kC * (1.0 + 3.0 * kA * x * x);
  }
  const float s = sigmoid(x);
  return s * (1.0 + x * (1.0 - s));
}

float ld(uint i) { return p.bf16 != 0 ? bf16_to_f32(uint(x16[p.ox + i])) : x32[p.ox + i]; }
float ld_dy(uint i) { return p.bf16 != 0 ? bf16_to_f32(uint(d16[p.od + i])) : d32[p.od + i]; }
float ld_y(uint i) { return p.bf16 != 0 ? bf16_to_f32(uint(y16[p.oy + i])) : y32[p.oy + i]; }
void st_y(uint i, float v) {
  if (p.bf16 != 0) y16[p.oy + i] = uint16_t(f32_to_bf16(v));
  else y32[p.oy + i] = v;
}

void main() {
  const uint stride = gl_NumWorkGroups.x * 256;
  for (uint i = gl_GlobalInvocationID.x; i < p.n; i += stride) {
    const float x = ld(i);
    if (p.backward == 0) st_y(i, f(x));
    else st_y(i, ld_y(i) + ld_dy(i) * fprime(x));
  }
}
