// Reference embedding lookup, LayerNorm and RMSNorm (forward and accumulating
// backward), with row statistics in f64 and stored as f32.
#include <cmath>
#include <vector>

#include "backend/ref/ref_kernels.h"

namespace keel::backend::ref {

void embedding_forward(DType dt, const int32_t* ids, const void* table, void* out, int64_t n,
                       int64_t C) {
  visit_float(dt, [&](auto tag) {
    using T = decltype(tag);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t c = 0; c < C; ++c) st<T>(out, i * C + c, ld<T>(table, int64_t(ids[i]) * C + c));
  });
}

void embedding_backward(DType dt, const int32_t* ids, const void* dout, float* dtable, int64_t n,
                        int64_t C) {
  visit_float(dt, [&](auto tag) {
    using T = decltype(tag);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t c = 0; c < C; ++c)
        dtable[int64_t(ids[i]) * C + c] += float(ld<T>(dout, i * C + c));
  });
}

// Parameter gradients are summed over all rows in f64, then added to the f32 buffer once.
static void add_f64(float* dst, const std::vector<double>& acc) {
  for (size_t c = 0; c < acc.size(); ++c) dst[c] = float(double(dst[c]) + acc[c]);
}

void layernorm_forward(DType dt, const void* x, const void* w, const void* b, void* y, float* mean,
                       float* rstd, int64_t N, int64_t C, float eps) {
  visit_float(dt, [&](auto tag) {
    using T = decltype(tag);
    for (int64_t i = 0; i < N; ++i) {
      double mu = 0, var = 0;
      for (int64_t c = 0; c < C; ++c) mu += ld<T>(x, i * C + c);
      mu /= double(C);
      for (int64_t c = 0; c < C; ++c) {
        const double d = ld<T>(x, i * C + c) - mu;
        var += d * d;
      }
      var /= double(C);
      const double rs = 1.0 / std::sqrt(var + double(eps));
      mean[i] = float(mu);
      rstd[i] = float(rs);
      for (int64_t c = 0; c < C; ++c) {
        double v = (ld<T>(x, i * C + c) - mu) * rs * ld<T>(w, c);
        if (b) v += ld<T>(b, c);
        st<T>(y, i * C + c, v);
      }
    }
  });
}

void layernorm_backward(DType dt, const void* dy, const void* x, const void* w, const float* mean,
                        const float* rstd, void* dx, float* dw, float* db, int64_t N, int64_t C) {
  visit_float(dt, [&](auto tag) {
    using T = decltype(tag);
    std::vector<double> dw_acc(size_t(C), 0.0), db_acc(size_t(C), 0.0);
    for (int64_t i = 0; i < N; ++i) {
      const double mu = mean[i], rs = rstd[i];
      // dxhat = dy * w; dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
      double m1 = 0, m2 = 0;
      for (int64_t c = 0; c < C; ++c) {
        const double xhat = (ld<T>(x, i * C + c) - mu) * rs;
        const double dxhat = ld<T>(dy, i * C + c) * ld<T>(w, c);
        m1 += dxhat;
        m2 += dxhat * xhat;
      }
      m1 /= double(C);
      m2 /= double(C);
      for (int64_t c = 0; c < C; ++c) {
        const double xhat = (ld<T>(x, i * C + c) - mu) * rs;
        const double g = ld<T>(dy, i * C + c);
        st_add<T>(dx, i * C + c, rs * (g * ld<T>(w, c) - m1 - xhat * m2));
        dw_acc[size_t(c)] += g * xhat;
        db_acc[size_t(c)] += g;
      }
    }
    add_f64(dw, dw_acc);
    if (db) add_f64(db, db_acc);
  });
}

void rmsnorm_forward(DType dt, const void* x, const void* w, void* y, float* rstd, int64_t N,
                     int64_t C, float eps) {
  visit_float(dt, [&](auto tag) {
    using T = decltype(tag);
    for (int64_t i = 0; i < N; ++i) {
      double ms = 0;
      for (int64_t c = 0; c < C; ++c) ms += ld<T>(x, i * C + c) * ld<T>(x, i * C + c);
      ms /= double(C);
      const double rs = 1.0 / std::sqrt(ms + double(eps));
      rstd[i] = float(rs);
      for (int64_t c = 0; c < C; ++c) st<T>(y, i * C + c, ld<T>(x, i * C + c) * rs * ld<T>(w, c));
    }
  });
}

void rmsnorm_backward(DType dt, const void* dy, const void* x, const void* w, const float* rstd,
                      void* dx, float* dw, int64_t N, int64_t C) {
  visit_float(dt, [&](auto tag) {
    using T = decltype(tag);
    std::vector<double> dw_acc(size_t(C), 0.0);
    for (int64_t i = 0; i < N; ++i) {
      const double rs = rstd[i];
      // dx = rstd * (dxhat - xhat * mean(dxhat * xhat)), dxhat = dy * w, xhat = x * rstd
      double m = 0;
      for (int64_t c = 0; c < C; ++c)
        m += ld<T>(dy, i * C + c) * ld<T>(w, c) * ld<T>(x, i * C + c) * rs;
      m /= double(C);
      for (int64_t c = 0; c < C; ++c) {
        const double xhat = ld<T>(x, i * C + c) * rs;
        const double g = ld<T>(dy, i * C + c);
        st_add<T>(dx, i * C + c, rs * (g * ld<T>(w, c) - xhat * m));
        dw_acc[size_t(c)] += g * xhat;
      }
    }
    add_f64(dw, dw_acc);
  });
}

}  // namespace keel::backend::ref
