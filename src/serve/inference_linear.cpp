#include "serve/inference_linear.h"

#include <sys/mman.h>

#include <cstdint>
#include <cstring>

#include "backend/device_tensor.h"
#include "core/log.h"

namespace keel::serve {

namespace {

// Linux's synchronous collapse into 2 MiB pages (uapi value; older libc
// headers lack the name).
#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif

// Decode streams every weight from memory once per token; backing them with
// 2 MiB pages saves a page walk every 4 KiB (llama.cpp's mmap of a GGUF file
// gets the same from the page cache's large folios). Only a hint: where the
// kernel lacks it or has no huge page free, the 4 KiB pages stay, unchanged.
void prefer_huge_pages(const Tensor& t) {
  const uintptr_t huge = uintptr_t(1) << 21, p = reinterpret_cast<uintptr_t>(t.raw());
  const uintptr_t lo = (p + huge - 1) & ~(huge - 1), hi = (p + t.nbytes()) & ~(huge - 1);
  if (hi > lo) (void)madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_COLLAPSE);
}

}  // namespace

InferenceLinear make_inference_linear(backend::Backend& be, const std::vector<const Tensor*>& parts,
                                      const Tensor* bias, DType format) {
  InferenceLinear l;
  l.K = parts[0]->dim(1);
  for (const Tensor* p : parts) l.N += p->dim(0);
  Tensor f = parts.size() == 1 ? *parts[0] : Tensor::zeros({l.N, l.K}, DType::F32);
  if (parts.size() > 1) {
    char* dst = static_cast<char*>(f.raw());
    for (const Tensor* p : parts) {
      std::memcpy(dst, p->raw(), p->nbytes());
      dst += p->nbytes();
    }
  }
  if (bias) l.bias = backend::to_device(be, *bias, "bias");
  l.dt = format;
  if (dtype_is_blocked(l.dt) && l.K % kQBlock != 0) {
    keel::log().warn("quant: {} needs an inner size divisible by {}; a ({}, {}) weight stays f32",
                     dtype_name(l.dt), kQBlock, l.N, l.K);
    l.dt = DType::F32;
  }
  // On a device the f32 weight is uploaded once and quantized there.
  const Tensor fd = backend::to_device(be, f, "weight");
  if (l.dt == DType::F32) {
    l.w = fd;
  } else {
    l.w = backend::empty_on(be, {l.N, l.K}, l.dt, "quantized weight");
    if (l.dt == DType::I8) l.scale = backend::empty_on(be, {l.N}, DType::F32, "weight scales");
    be.quantize(l.dt, fd.data<float>(), l.w.raw(),
                l.dt == DType::I8 ? l.scale.data<float>() : nullptr, l.N, l.K);
    if (const size_t bytes = be.qpack_bytes(l.dt, l.N, l.K); bytes > 0) {
      Tensor p = backend::empty_on(be, {int64_t(bytes)}, DType::I8, "packed quantized weight");
      be.qpack(l.dt, l.w.raw(), l.scale.defined() ? l.scale.data<float>() : nullptr, p.raw(), l.N,
               l.K);
      l.w = p;
      l.scale = Tensor();
      l.packed = true;
    }
  }
  if (l.w.on_host()) prefer_huge_pages(l.w);
  return l;
}

void apply_inference_linear(backend::Backend& be, const InferenceLinear& l, const float* x,
                            float* y, int64_t M) {
  if (l.dt == DType::F32) {
    backend::MatmulArgs a;
    a.trans_b = true;
    a.M = M;
    a.N = l.N;
    a.K = l.K;
    a.lda = l.K;
    a.ldb = l.K;
    a.ldc = l.N;
    be.matmul(a, x, l.w.raw(), y);
  } else if (l.packed) {
    be.qmatmul_packed(l.dt, x, l.w.raw(), y, M, l.N, l.K);
  } else {
    be.qmatmul(l.dt, x, l.w.raw(), l.scale.defined() ? l.scale.data<float>() : nullptr, y, M, l.N,
               l.K);
  }
  if (l.bias.defined()) be.bias_add(DType::F32, y, l.bias.raw(), M, l.N);
}

void apply_inference_head(backend::Backend& be, const InferenceLinear& head, const float* x,
                          float* logits, int64_t M, Tensor& scratch) {
  if (be.host_memory()) {
    apply_inference_linear(be, head, x, logits, M);
    return;
  }
  const int64_t n = M * head.N;
  float* d = grown<float>(be, scratch, n, DType::F32);
  apply_inference_linear(be, head, x, d, M);
  be.download(logits, d, size_t(n) * sizeof(float));
}

}  // namespace keel::serve
