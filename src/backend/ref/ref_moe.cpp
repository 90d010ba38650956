// Reference mixture-of-experts kernels: routing (gating scores, top-k with
// ties to the smaller expert id, normalised weights), token permutation to
// expert order and back, and one GEMM per expert group.
#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/ref/ref_kernels.h"

namespace keel::backend::ref {

void moe_route_forward(const MoeRouteArgs& a, const float* logits, const float* bias, float* scores,
                       int32_t* idx, float* w) {
  std::vector<int32_t> order(size_t(a.E));
  std::vector<float> key(size_t(a.E));
  for (int64_t n = 0; n < a.N; ++n) {
    const float* l = logits + n * a.E;
    float* s = scores + n * a.E;
    if (a.gating == MoeGating::Sigmoid) {
      for (int64_t e = 0; e < a.E; ++e) s[e] = float(1.0 / (1.0 + std::exp(-double(l[e]))));
    } else {
      double mx = -INFINITY, z = 0;
      for (int64_t e = 0; e < a.E; ++e) mx = std::max(mx, double(l[e]));
      for (int64_t e = 0; e < a.E; ++e) z += std::exp(double(l[e]) - mx);
      for (int64_t e = 0; e < a.E; ++e) s[e] = float(std::exp(double(l[e]) - mx) / z);
    }
    for (int64_t e = 0; e < a.E; ++e) {
      order[size_t(e)] = int32_t(e);
      key[size_t(e)] = bias ? s[e] + bias[e] : s[e];
      if (a.noise > 0.f) key[size_t(e)] += route_jitter(a, n, e);
    }
    // Larger key first; equal keys keep the smaller expert id first.
    std::stable_sort(order.begin(), order.end(),
                     [&](int32_t x, int32_t y) { return key[size_t(x)] > key[size_t(y)]; });
    double sum = 0;
    for (int64_t k = 0; k < a.K; ++k) sum += double(s[order[size_t(k)]]);
    for (int64_t k = 0; k < a.K; ++k) {
      const int32_t e = order[size_t(k)];
      idx[n * a.K + k] = e;
      const double v = double(s[e]) / (a.norm_topk ? sum : 1.0);
      w[n * a.K + k] = float(double(a.scale) * v);
    }
  }
}

void moe_route_backward(const MoeRouteArgs& a, const float* scores, const int32_t* idx,
                        const float* dw, const float* dscores, float* dlogits) {
  std::vector<double> ds(size_t(a.E));
  for (int64_t n = 0; n < a.N; ++n) {
    const float* s = scores + n * a.E;
    const int32_t* id = idx + n * a.K;
    const float* g = dw + n * a.K;
    for (int64_t e = 0; e < a.E; ++e) ds[size_t(e)] = dscores ? double(dscores[n * a.E + e]) : 0.0;
    if (a.norm_topk) {
      // w_k = scale * s_k / S: ds_k = scale * (g_k - sum_j g_j s_j / S) / S
      double S = 0, gs = 0;
      for (int64_t k = 0; k < a.K; ++k) {
        S += double(s[id[k]]);
        gs += double(g[k]) * double(s[id[k]]);
      }
      for (int64_t k = 0; k < a.K; ++k)
        ds[size_t(id[k])] += double(a.scale) * (double(g[k]) - gs / S) / S;
    } else {
      for (int64_t k = 0; k < a.K; ++k) ds[size_t(id[k])] += double(a.scale) * double(g[k]);
    }
    float* dl = dlogits + n * a.E;
    if (a.gating == MoeGating::Sigmoid) {
      for (int64_t e = 0; e < a.E; ++e)
        dl[e] = float(double(dl[e]) + ds[size_t(e)] * double(s[e]) * (1.0 - double(s[e])));
    } else {
      double dot = 0;
      for (int64_t e = 0; e < a.E; ++e) dot += ds[size_t(e)] * double(s[e]);
      for (int64_t e = 0; e < a.E; ++e)
        dl[e] = float(double(dl[e]) + double(s[e]) * (ds[size_t(e)] - dot));
    }
  }
}

namespace {

template <class T>
void permute_fw(const int32_t* pos, const void* x, void* xp, int64_t N, int64_t K, int64_t C) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k) {
      const int64_t r = pos[n * K + k];
      if (r < 0) continue;
      for (int64_t c = 0; c < C; ++c) st<T>(xp, r * C + c, ld<T>(x, n * C + c));
    }
}

template <class T>
void permute_bw(const int32_t* pos, const void* dxp, void* dx, int64_t N, int64_t K, int64_t C) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) {
      double acc = ld<T>(dx, n * C + c);
      for (int64_t k = 0; k < K; ++k) {
        const int64_t r = pos[n * K + k];
        if (r >= 0) acc += ld<T>(dxp, r * C + c);
      }
      st<T>(dx, n * C + c, acc);
    }
}

template <class T>
void unpermute_fw(const int32_t* pos, const float* w, const void* yp, void* y, int64_t N, int64_t K,
                  int64_t C) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t c = 0; c < C; ++c) {
      double acc = 0;
      for (int64_t k = 0; k < K; ++k) {
        const int64_t r = pos[n * K + k];
        if (r >= 0) acc += double(w[n * K + k]) * ld<T>(yp, r * C + c);
      }
      st<T>(y, n * C + c, acc);
    }
}

template <class T>
void unpermute_bw(const int32_t* pos, const float* w, const void* yp, const void* dy, void* dyp,
                  float* dw, int64_t N, int64_t K, int64_t C) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k) {
      const int64_t r = pos[n * K + k];
      if (r < 0) continue;
      double dot = 0;
      for (int64_t c = 0; c < C; ++c) {
        const double g = ld<T>(dy, n * C + c);
        dot += g * ld<T>(yp, r * C + c);
        st_add<T>(dyp, r * C + c, double(w[n * K + k]) * g);
      }
      dw[n * K + k] = float(double(dw[n * K + k]) + dot);
    }
}

}  // namespace

void moe_permute_forward(DType dt, const int32_t* pos, const void* x, void* xp, int64_t N,
                         int64_t K, int64_t C) {
  visit_float(dt, [&](auto t) { permute_fw<decltype(t)>(pos, x, xp, N, K, C); });
}
void moe_permute_backward(DType dt, const int32_t* pos, const void* dxp, void* dx, int64_t N,
                          int64_t K, int64_t C) {
  visit_float(dt, [&](auto t) { permute_bw<decltype(t)>(pos, dxp, dx, N, K, C); });
}
void moe_unpermute_forward(DType dt, const int32_t* pos, const float* w, const void* yp, void* y,
                           int64_t N, int64_t K, int64_t C) {
  visit_float(dt, [&](auto t) { unpermute_fw<decltype(t)>(pos, w, yp, y, N, K, C); });
}
void moe_unpermute_backward(DType dt, const int32_t* pos, const float* w, const void* yp,
                            const void* dy, void* dyp, float* dw, int64_t N, int64_t K, int64_t C) {
  visit_float(dt, [&](auto t) { unpermute_bw<decltype(t)>(pos, w, yp, dy, dyp, dw, N, K, C); });
}

void moe_plan(const int32_t* idx, int64_t N, int64_t K, int64_t E, int64_t capacity, int32_t* pos,
              int64_t* offsets) {
  std::vector<int64_t> kept(size_t(E), 0);
  // First pass: each slot's rank within its expert (token order decides who fits).
  for (int64_t i = 0; i < N * K; ++i) {
    const size_t e = size_t(idx[i]);
    if (capacity > 0 && kept[e] >= capacity)
      pos[i] = -1;
    else
      pos[i] = int32_t(kept[e]++);
  }
  offsets[0] = 0;
  for (int64_t e = 0; e < E; ++e) offsets[e + 1] = offsets[e] + kept[size_t(e)];
  for (int64_t i = 0; i < N * K; ++i)
    if (pos[i] >= 0) pos[i] = int32_t(offsets[idx[i]] + pos[i]);
}

void moe_route_stats(const MoeRouteArgs& a, const float* scores, const int32_t* idx,
                     const int32_t* plain_idx, const int32_t* pos, float* load, double* stats) {
  const int64_t N = a.N, E = a.E, K = a.K;
  for (int64_t i = 0; i < N * K; ++i) load[idx[i]] += 1.f;  // exact integers in f32
  for (int64_t i = 0; i < N * K; ++i) load[3 * E + plain_idx[i]] += 1.f;
  for (int64_t e = 0; e < E; ++e) {
    double s1 = 0, s2 = 0;
    for (int64_t n = 0; n < N; ++n) {
      const double v = double(scores[n * E + e]);
      s1 += v;
      s2 += v * v;
    }
    load[E + e] = float(double(load[E + e]) + s1);
    load[2 * E + e] = float(double(load[2 * E + e]) + s2);
  }
  for (int64_t n = 0; n < N; ++n) {
    double z = 0, h = 0;
    for (int64_t e = 0; e < E; ++e) z += double(scores[n * E + e]);
    for (int64_t e = 0; e < E; ++e) {
      const double p = double(scores[n * E + e]) / z;
      if (p > 0) h -= p * std::log(p);
    }
    stats[0] += h;
  }
  for (int64_t i = 0; i < N * K; ++i)
    if (pos[i] < 0) stats[1] += 1.0;
}

void moe_aux_loss(const MoeRouteArgs& a, int64_t T, float alpha, float grad_scale, const float* s,
                  const int32_t* id, float* dscores, double* loss) {
  const int64_t E = a.E, K = a.K, B = a.N / T;
  const size_t ne = size_t(E);
  std::vector<double> f(ne), P(ne), gs(ne);
  double total = 0;
  for (int64_t b = 0; b < B; ++b) {
    std::fill(f.begin(), f.end(), 0.0);
    std::fill(P.begin(), P.end(), 0.0);
    for (int64_t t = b * T; t < (b + 1) * T; ++t) {
      for (int64_t k = 0; k < K; ++k) f[size_t(id[t * K + k])] += double(E) / double(K * T);
      double z = 0;
      for (int64_t e = 0; e < E; ++e) z += double(s[t * E + e]);
      for (int64_t e = 0; e < E; ++e) P[size_t(e)] += double(s[t * E + e]) / z / double(T);
    }
    for (int64_t e = 0; e < E; ++e) total += double(alpha) * f[size_t(e)] * P[size_t(e)];
    // dL/ds'_te = alpha f_e / (T B), through the per-token normalisation s' = s / z.
    for (int64_t t = b * T; t < (b + 1) * T; ++t) {
      double z = 0, dot = 0;
      for (int64_t e = 0; e < E; ++e) z += double(s[t * E + e]);
      for (int64_t e = 0; e < E; ++e) {
        gs[size_t(e)] = double(alpha) * f[size_t(e)] / double(T * B);
        dot += gs[size_t(e)] * double(s[t * E + e]) / z;
      }
      for (int64_t e = 0; e < E; ++e)
        dscores[t * E + e] = float(double(grad_scale) * (gs[size_t(e)] - dot) / z);
    }
  }
  loss[0] += total / double(B);
}

void grouped_matmul_forward(const GroupedMatmulArgs& a, const void* x, const void* w, void* y) {
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
    matmul(m, static_cast<const char*>(x) + size_t(r0 * a.K) * es,
           static_cast<const char*>(w) + size_t(g * a.N * a.K) * es,
           static_cast<char*>(y) + size_t(r0 * a.N) * es);
  }
}

void grouped_matmul_backward(const GroupedMatmulArgs& a, const void* dy, const void* x,
                             const void* w, void* dx, float* dw) {
  const size_t es = dtype_size(a.dt);
  for (int64_t g = 0; g < a.G; ++g) {
    const int64_t r0 = a.offsets[g], rows = a.offsets[g + 1] - r0;
    if (rows <= 0) continue;
    const char* dyg = static_cast<const char*>(dy) + size_t(r0 * a.N) * es;
    const char* xg = static_cast<const char*>(x) + size_t(r0 * a.K) * es;
    if (dx) {  // dx_g (rows, K) += dy_g (rows, N) @ w_g (N, K)
      MatmulArgs m;
      m.M = rows;
      m.N = a.K;
      m.K = a.N;
      m.lda = a.N;
      m.ldb = a.K;
      m.ldc = a.K;
      m.beta = 1.f;
      m.a_dtype = m.b_dtype = m.c_dtype = a.dt;
      matmul(m, dyg, static_cast<const char*>(w) + size_t(g * a.N * a.K) * es,
             static_cast<char*>(dx) + size_t(r0 * a.K) * es);
    }
    if (dw) {  // dw_g (N, K) += dy_g^T (N, rows) @ x_g (rows, K)
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
      matmul(m, dyg, xg, dw + g * a.N * a.K);
    }
  }
}

}  // namespace keel::backend::ref
