// Reference layout kernels: strided row copies and multi-head latent
// attention's q/k/v assembly with its gradient (backend.h's copy_rows and
// mla_qkv_*). Pure data movement, except the sums of gradients that several
// heads share.
#include <cstring>

#include "backend/ref/ref_kernels.h"

namespace keel::backend::ref {

void copy_rows(DType dt, const void* src, int64_t src_stride, void* dst, int64_t dst_stride,
               int64_t rows, int64_t cols, bool accumulate) {
  visit_float(dt, [&](auto tag) {
    using T = decltype(tag);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) {
        const double v = ld<T>(src, r * src_stride + c);
        if (accumulate)
          st_add<T>(dst, r * dst_stride + c, v);
        else
          st<T>(dst, r * dst_stride + c, v);
      }
  });
}

void mla_qkv_forward(const MlaArgs& a, const void* q, const void* kv, const void* kpe, void* qkv) {
  const int64_t D = a.D(), row = 3 * a.NH * D, kvw = a.nope + a.v;
  visit_float(a.dt, [&](auto tag) {
    using T = decltype(tag);
    for (int64_t t = 0; t < a.N; ++t) {
      const int64_t o = t * row;
      for (int64_t j = 0; j < a.NH * D; ++j) st<T>(qkv, o + j, ld<T>(q, t * a.NH * D + j));
      for (int64_t h = 0; h < a.NH; ++h) {
        const int64_t kvh = t * a.NH * kvw + h * kvw, k0 = o + (a.NH + h) * D,
                      v0 = o + (2 * a.NH + h) * D;
        for (int64_t j = 0; j < a.nope; ++j) st<T>(qkv, k0 + j, ld<T>(kv, kvh + j));
        for (int64_t j = 0; j < a.rope; ++j)
          st<T>(qkv, k0 + a.nope + j, ld<T>(kpe, t * a.rope + j));
        for (int64_t j = 0; j < D; ++j)
          st<T>(qkv, v0 + j, j < a.v ? ld<T>(kv, kvh + a.nope + j) : 0.0);
      }
    }
  });
}

void mla_qkv_backward(const MlaArgs& a, const void* g, const void* g_rope, void* dq, void* dkv,
                      void* dkpe) {
  const int64_t D = a.D(), row = 3 * a.NH * D, kvw = a.nope + a.v;
  visit_float(a.dt, [&](auto tag) {
    using T = decltype(tag);
    for (int64_t t = 0; t < a.N; ++t) {
      const int64_t o = t * row;
      for (int64_t h = 0; h < a.NH; ++h) {
        const int64_t qh = t * a.NH * D + h * D;
        for (int64_t j = 0; j < D; ++j)
          st_add<T>(dq, qh + j,
                    j < a.nope ? ld<T>(g, o + h * D + j) : ld<T>(g_rope, o + h * D + j));
        const int64_t kvh = t * a.NH * kvw + h * kvw, k0 = o + (a.NH + h) * D,
                      v0 = o + (2 * a.NH + h) * D;
        for (int64_t j = 0; j < a.nope; ++j) st_add<T>(dkv, kvh + j, ld<T>(g, k0 + j));
        for (int64_t j = 0; j < a.v; ++j) st_add<T>(dkv, kvh + a.nope + j, ld<T>(g, v0 + j));
      }
      for (int64_t j = 0; j < a.rope; ++j) {
        float acc = float(ld<T>(dkpe, t * a.rope + j));
        for (int64_t h = 0; h < a.NH; ++h)
          acc += float(ld<T>(g_rope, o + (a.NH + h) * D + a.nope + j));
        st<T>(dkpe, t * a.rope + j, double(acc));
      }
    }
  });
}

}  // namespace keel::backend::ref
