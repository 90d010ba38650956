// The cpu backend's mixture-of-experts kernels: routing, token permutation
// and grouped expert matmuls. Each token (or group) is one work item written
// by exactly one thread in a fixed order, so results do not depend on the
// thread count; grouped matmuls are one cpu::gemm per expert.
#pragma once
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/gemm.h"
#include "core/dtype.h"
#include "core/error.h"

namespace keel::backend::cpu::moe {

// f(i) for i in [0, n), static schedule. A serial call stays outside any
// OpenMP region: even one with if(false) costs microseconds (simd.h).
template <class F>
inline void for_items(int64_t n, int threads, F&& f) {
  if (threads <= 1 || n <= 1) {
    for (int64_t i = 0; i < n; ++i) f(i);
    return;
  }
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t i = 0; i < n; ++i) f(i);
}

template <class F>
inline void visit(DType dt, F&& f) {
  if (dt == DType::F32) return f(float{});
  if (dt == DType::BF16) return f(bf16_t{});
  fail<KernelError>("[moe] cpu backend: dtype {} not supported", dtype_name(dt));
}

inline void route_forward(const MoeRouteArgs& a, const float* logits, const float* bias,
                          float* scores, int32_t* idx, float* w, int threads) {
  for_items(a.N, threads, [&](int64_t n) {
    const float* l = logits + n * a.E;
    float* s = scores + n * a.E;
    if (a.gating == MoeGating::Sigmoid) {
      for (int64_t e = 0; e < a.E; ++e) s[e] = 1.f / (1.f + std::exp(-l[e]));
    } else {
      float mx = -INFINITY, z = 0;
      for (int64_t e = 0; e < a.E; ++e) mx = std::max(mx, l[e]);
      for (int64_t e = 0; e < a.E; ++e) z += std::exp(l[e] - mx);
      for (int64_t e = 0; e < a.E; ++e) s[e] = std::exp(l[e] - mx) / z;
    }
    // Selection by repeated arg-max over the f32 keys: strict '>' keeps the
    // smaller expert id on equal keys.
    int32_t* id = idx + n * a.K;
    float sum = 0;
    for (int64_t k = 0; k < a.K; ++k) {
      int32_t best = -1;
      float bk = 0;
      for (int64_t e = 0; e < a.E; ++e) {
        bool taken = false;
        for (int64_t j = 0; j < k; ++j) taken = taken || id[j] == e;
        if (taken) continue;
        float key = bias ? s[e] + bias[e] : s[e];
        if (a.noise > 0.f) key += route_jitter(a, n, e);
        if (best < 0 || key > bk) {
          best = int32_t(e);
          bk = key;
        }
      }
      id[k] = best;
      sum += s[best];
    }
    for (int64_t k = 0; k < a.K; ++k)
      w[n * a.K + k] = a.scale * (a.norm_topk ? s[id[k]] / sum : s[id[k]]);
  });
}

inline void route_backward(const MoeRouteArgs& a, const float* scores, const int32_t* idx,
                           const float* dw, const float* dscores, float* dlogits, int threads) {
  for_items(a.N, threads, [&](int64_t n) {
    std::vector<float> ds(size_t(a.E));
    const float* s = scores + n * a.E;
    const int32_t* id = idx + n * a.K;
    const float* g = dw + n * a.K;
    for (int64_t e = 0; e < a.E; ++e) ds[size_t(e)] = dscores ? dscores[n * a.E + e] : 0.f;
    if (a.norm_topk) {
      float S = 0, gs = 0;
      for (int64_t k = 0; k < a.K; ++k) {
        S += s[id[k]];
        gs += g[k] * s[id[k]];
      }
      for (int64_t k = 0; k < a.K; ++k) ds[size_t(id[k])] += a.scale * (g[k] - gs / S) / S;
    } else {
      for (int64_t k = 0; k < a.K; ++k) ds[size_t(id[k])] += a.scale * g[k];
    }
    float* dl = dlogits + n * a.E;
    if (a.gating == MoeGating::Sigmoid) {
      for (int64_t e = 0; e < a.E; ++e) dl[e] += ds[size_t(e)] * s[e] * (1.f - s[e]);
    } else {
      float dot = 0;
      for (int64_t e = 0; e < a.E; ++e) dot += ds[size_t(e)] * s[e];
      for (int64_t e = 0; e < a.E; ++e) dl[e] += s[e] * (ds[size_t(e)] - dot);
    }
  });
}

inline void permute_forward(DType dt, const int32_t* pos, const void* x, void* xp, int64_t N,
                            int64_t K, int64_t C, int threads) {
  const size_t row = size_t(C) * dtype_size(dt);
  for_items(N, threads, [&](int64_t n) {
    for (int64_t k = 0; k < K; ++k) {
      const int64_t r = pos[n * K + k];
      if (r >= 0)
        std::copy_n(static_cast<const char*>(x) + size_t(n) * row, row,
                    static_cast<char*>(xp) + size_t(r) * row);
    }
  });
}

inline void permute_backward(DType dt, const int32_t* pos, const void* dxp, void* dx, int64_t N,
                             int64_t K, int64_t C, int threads) {
  visit(dt, [&](auto tag) {
    using T = decltype(tag);
    const T* src = static_cast<const T*>(dxp);
    T* dst = static_cast<T*>(dx);
    for_items(N, threads, [&](int64_t n) {
      for (int64_t c = 0; c < C; ++c) {
        float acc = to_f32(dst[n * C + c]);
        for (int64_t k = 0; k < K; ++k) {
          const int64_t r = pos[n * K + k];
          if (r >= 0) acc += to_f32(src[r * C + c]);
        }
        dst[n * C + c] = from_f32<T>(acc);
      }
    });
  });
}

inline void unpermute_forward(DType dt, const int32_t* pos, const float* w, const void* yp, void* y,
                              int64_t N, int64_t K, int64_t C, int threads) {
  visit(dt, [&](auto tag) {
    using T = decltype(tag);
    const T* src = static_cast<const T*>(yp);
    T* dst = static_cast<T*>(y);
    for_items(N, threads, [&](int64_t n) {
      std::vector<float> acc(size_t(C), 0.f);
      for (int64_t k = 0; k < K; ++k) {
        const int64_t r = pos[n * K + k];
        if (r < 0) continue;
        const float wk = w[n * K + k];
        for (int64_t c = 0; c < C; ++c) acc[size_t(c)] += wk * to_f32(src[r * C + c]);
      }
      for (int64_t c = 0; c < C; ++c) dst[n * C + c] = from_f32<T>(acc[size_t(c)]);
    });
  });
}

inline void unpermute_backward(DType dt, const int32_t* pos, const float* w, const void* yp,
                               const void* dy, void* dyp, float* dw, int64_t N, int64_t K,
                               int64_t C, int threads) {
  visit(dt, [&](auto tag) {
    using T = decltype(tag);
    const T* y = static_cast<const T*>(yp);
    const T* g = static_cast<const T*>(dy);
    T* d = static_cast<T*>(dyp);
    for_items(N, threads, [&](int64_t n) {
      for (int64_t k = 0; k < K; ++k) {
        const int64_t r = pos[n * K + k];
        if (r < 0) continue;
        const float wk = w[n * K + k];
        float dot = 0;
        for (int64_t c = 0; c < C; ++c) {
          const float gc = to_f32(g[n * C + c]);
          dot += gc * to_f32(y[r * C + c]);
          d[r * C + c] = from_f32<T>(to_f32(d[r * C + c]) + wk * gc);
        }
        dw[n * K + k] += dot;
      }
    });
  });
}

inline void grouped_forward(const GroupedMatmulArgs& a, const void* x, const void* w, void* y,
                            int threads) {
  const size_t es = dtype_size(a.dt);
  for (int64_t g = 0; g < a.G; ++g) {
    const int64_t r0 = a.offsets[g], rows = a.offsets[g + 1] - r0;
    if (rows <= 0) continue;
    MatmulArgs m;
    m.trans_b = true;
    m.M = rows;
    m.N = a.N;
    m.K = a.K;
    m.lda = a.K;
    m.ldb = a.K;
    m.ldc = a.N;
    m.a_dtype = m.b_dtype = m.c_dtype = a.dt;
    gemm(m, static_cast<const char*>(x) + size_t(r0 * a.K) * es,
         static_cast<const char*>(w) + size_t(g * a.N * a.K) * es,
         static_cast<char*>(y) + size_t(r0 * a.N) * es, threads);
  }
}

inline void grouped_backward(const GroupedMatmulArgs& a, const void* dy, const void* x,
                             const void* w, void* dx, float* dw, int threads) {
  const size_t es = dtype_size(a.dt);
  for (int64_t g = 0; g < a.G; ++g) {
    const int64_t r0 = a.offsets[g], rows = a.offsets[g + 1] - r0;
    if (rows <= 0) continue;
    const char* dyg = static_cast<const char*>(dy) + size_t(r0 * a.N) * es;
    const char* xg = static_cast<const char*>(x) + size_t(r0 * a.K) * es;
    if (dx) {
      MatmulArgs m;
      m.M = rows;
      m.N = a.K;
      m.K = a.N;
      m.lda = a.N;
      m.ldb = a.K;
      m.ldc = a.K;
      m.beta = 1.f;
      m.a_dtype = m.b_dtype = m.c_dtype = a.dt;
      gemm(m, dyg, static_cast<const char*>(w) + size_t(g * a.N * a.K) * es,
           static_cast<char*>(dx) + size_t(r0 * a.K) * es, threads);
    }
    if (dw) {
      MatmulArgs m;
      m.trans_a = true;
      m.M = a.N;
      m.N = a.K;
      m.K = rows;
      m.lda = a.N;
      m.ldb = a.K;
      m.ldc = a.K;
      m.beta = 1.f;
      m.a_dtype = m.b_dtype = a.dt;
      m.c_dtype = DType::F32;
      gemm(m, dyg, xg, dw + g * a.N * a.K, threads);
    }
  }
}

}  // namespace keel::backend::cpu::moe
