// Reference elementwise kernels (activations, add, bias), reductions over the
// last axis, sum of squares and dtype casts.
#include <cmath>
#include <vector>

#include "backend/ref/ref_kernels.h"

namespace keel::backend::ref {

namespace {

constexpr double kGeluC = 0.7978845608028654;  // sqrt(2 / pi)
constexpr double kGeluA = 0.044715;

double gelu(double x) {
  return 0.5 * x * (1.0 + std::tanh(kGeluC * (x + kGeluA * x * x * x)));
}
double gelu_grad(double x) {
  const double th = std::tanh(kGeluC * (x + kGeluA * x * x * x));
  return 0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * kGeluC * (1.0 + 3.0 * kGeluA * x * x);
}
double sigmoid(double x) {
  return 1.0 / (1.0 + std::exp(-x));
}
double silu(double x) {
  return x * sigmoid(x);
}
double silu_grad(double x) {
  const double s = sigmoid(x);
  return s * (1.0 + x * (1.0 - s));
}

// y[i] = f(x[i])
template <class F>
void map1(DType dt, const void* x, void* y, int64_t n, F f) {
  visit_float(dt, [&](auto tag) {
    using T = decltype(tag);
    for (int64_t i = 0; i < n; ++i) st<T>(y, i, f(ld<T>(x, i)));
  });
}
// dx[i] += dy[i] * f'(x[i])
template <class F>
void grad1(DType dt, const void* x, const void* dy, void* dx, int64_t n, F fprime) {
  visit_float(dt, [&](auto tag) {
    using T = decltype(tag);
    for (int64_t i = 0; i < n; ++i) st_add<T>(dx, i, ld<T>(dy, i) * fprime(ld<T>(x, i)));
  });
}

}  // namespace

void gelu_forward(DType dt, const void* x, void* y, int64_t n) {
  map1(dt, x, y, n, gelu);
}
void gelu_backward(DType dt, const void* x, const void* dy, void* dx, int64_t n) {
  grad1(dt, x, dy, dx, n, gelu_grad);
}
void silu_forward(DType dt, const void* x, void* y, int64_t n) {
  map1(dt, x, y, n, silu);
}
void silu_backward(DType dt, const void* x, const void* dy, void* dx, int64_t n) {
  grad1(dt, x, dy, dx, n, silu_grad);
}

void swiglu_forward(DType dt, const void* gate, const void* up, void* y, int64_t n) {
  visit_float(dt, [&](auto tag) {
    using T = decltype(tag);
    for (int64_t i = 0; i < n; ++i) st<T>(y, i, silu(ld<T>(gate, i)) * ld<T>(up, i));
  });
}

void swiglu_backward(DType dt, const void* gate, const void* up, const void* dy, void* dgate,
                     void* dup, int64_t n) {
  visit_float(dt, [&](auto tag) {
    using T = decltype(tag);
    for (int64_t i = 0; i < n; ++i) {
      const double g = ld<T>(gate, i), u = ld<T>(up, i), d = ld<T>(dy, i);
      st_add<T>(dgate, i, d * u * silu_grad(g));
      st_add<T>(dup, i, d * silu(g));
    }
  });
}

void add(DType dt, const void* a, const void* b, void* y, int64_t n) {
  visit_float(dt, [&](auto tag) {
    using T = decltype(tag);
    for (int64_t i = 0; i < n; ++i) st<T>(y, i, ld<T>(a, i) + ld<T>(b, i));
  });
}

void accumulate(DType dt, const void* x, void* y, int64_t n, float alpha) {
  visit_float(dt, [&](auto tag) {
    using T = decltype(tag);
    for (int64_t i = 0; i < n; ++i) st_add<T>(y, i, double(alpha) * ld<T>(x, i));
  });
}

void bias_add(DType dt, void* y, const void* bias, int64_t N, int64_t C) {
  visit_float(dt, [&](auto tag) {
    using T = decltype(tag);
    for (int64_t i = 0; i < N; ++i)
      for (int64_t c = 0; c < C; ++c) st_add<T>(y, i * C + c, ld<T>(bias, c));
  });
}

void bias_backward(DType dt, const void* dy, float* dbias, int64_t N, int64_t C) {
  visit_float(dt, [&](auto tag) {
    using T = decltype(tag);
    for (int64_t c = 0; c < C; ++c) {
      double acc = 0;
      for (int64_t i = 0; i < N; ++i) acc += ld<T>(dy, i * C + c);
      dbias[c] = float(double(dbias[c]) + acc);
    }
  });
}

void reduce_forward(ReduceOp op, DType dt, const void* x, float* y, int64_t N, int64_t C) {
  visit_float(dt, [&](auto tag) {
    using T = decltype(tag);
    for (int64_t i = 0; i < N; ++i) {
      double acc = op == ReduceOp::Max ? ld<T>(x, i * C) : 0.0;
      for (int64_t c = 0; c < C; ++c) {
        const double v = ld<T>(x, i * C + c);
        // A NaN anywhere makes the max NaN, so health checks see it.
        acc = op == ReduceOp::Max ? ((std::isnan(v) || v > acc) ? v : acc) : acc + v;
      }
      if (op == ReduceOp::Mean) acc /= double(C);
      y[i] = float(acc);
    }
  });
}

void reduce_backward(ReduceOp op, DType dt, const void* x, const float* dy, void* dx, int64_t N,
                     int64_t C) {
  visit_float(dt, [&](auto tag) {
    using T = decltype(tag);
    for (int64_t i = 0; i < N; ++i) {
      if (op == ReduceOp::Max) {
        if (C == 0) continue;
        int64_t arg = 0;  // first index of the maximum
        for (int64_t c = 1; c < C; ++c)
          if (ld<T>(x, i * C + c) > ld<T>(x, i * C + arg)) arg = c;
        st_add<T>(dx, i * C + arg, dy[i]);
        continue;
      }
      const double g = op == ReduceOp::Mean ? double(dy[i]) / double(C) : double(dy[i]);
      for (int64_t c = 0; c < C; ++c) st_add<T>(dx, i * C + c, g);
    }
  });
}

double sum_squares(DType dt, const void* x, int64_t n) {
  double acc = 0;
  visit_float(dt, [&](auto tag) {
    using T = decltype(tag);
    for (int64_t i = 0; i < n; ++i) acc += ld<T>(x, i) * ld<T>(x, i);
  });
  return acc;
}

void cast(DType src_dt, const void* src, DType dst_dt, void* dst, int64_t n) {
  // Every f16 and bf16 value is exact in f32, so going through f32 rounds once.
  visit_float(src_dt, [&](auto stag) {
    using S = decltype(stag);
    visit_float(dst_dt, [&](auto dtag) {
      using D = decltype(dtag);
      for (int64_t i = 0; i < n; ++i)
        static_cast<D*>(dst)[i] = from_f32<D>(to_f32(static_cast<const S*>(src)[i]));
    });
  });
}

}  // namespace keel::backend::ref
