// Reference rotary embedding and causal grouped-query attention. Attention
// materialises each query row's scores in f64; backward recomputes them.
#include <cmath>
#include <limits>
#include <vector>

#include "backend/ref/ref_kernels.h"

namespace keel::backend::ref {

namespace {

// Rotates every pair of (B, T, NH, HS) by sign * angle; `accumulate` adds into out.
template <class T>
void rope_apply(const RopeArgs& a, const void* in, void* out, double sign, bool accumulate) {
  for (int64_t b = 0; b < a.B; ++b)
    for (int64_t t = 0; t < a.T; ++t) {
      const double pos = double(a.pos0 + t);
      for (int64_t h = 0; h < a.NH; ++h) {
        const int64_t base = b * a.batch_stride + t * a.row_stride + h * a.HS;
        for (int64_t i = 0; i < a.HS / 2; ++i) {
          const double freq = std::pow(double(a.theta), -2.0 * double(i) / double(a.HS));
          const double ang = sign * pos * freq, c = std::cos(ang), s = std::sin(ang);
          const double x0 = ld<T>(in, base + 2 * i), x1 = ld<T>(in, base + 2 * i + 1);
          const double y0 = x0 * c - x1 * s, y1 = x0 * s + x1 * c;
          if (accumulate) {
            st_add<T>(out, base + 2 * i, y0);
            st_add<T>(out, base + 2 * i + 1, y1);
          } else {  // both inputs are read before writing, so out may alias in
            st<T>(out, base + 2 * i, y0);
            st<T>(out, base + 2 * i + 1, y1);
          }
        }
      }
    }
}

// Offsets of q row (b, t, h) and kv row (b, j, kvh).
inline int64_t q_off(const AttentionArgs& a, int64_t b, int64_t t, int64_t h) {
  return b * a.q_batch_stride + t * a.q_row_stride + h * a.HS;
}
inline int64_t kv_off(const AttentionArgs& a, int64_t b, int64_t j, int64_t kh) {
  return b * a.kv_batch_stride + j * a.kv_row_stride + kh * a.HS;
}

// Scaled scores of query (b, t, h) against keys 0..Tk-Tq+t; returns their log-sum-exp.
template <class T>
double scores(const AttentionArgs& a, const void* q, const void* k, int64_t b, int64_t t, int64_t h,
              std::vector<double>& s) {
  const int64_t kh = h / (a.NH / a.NKV), last = a.Tk - a.Tq + t;
  s.assign(size_t(last + 1), 0.0);
  double mx = -std::numeric_limits<double>::infinity();
  for (int64_t j = 0; j <= last; ++j) {
    double dot = 0;
    for (int64_t d = 0; d < a.HS; ++d)
      dot += ld<T>(q, q_off(a, b, t, h) + d) * ld<T>(k, kv_off(a, b, j, kh) + d);
    s[size_t(j)] = dot * double(a.scale);
    mx = std::max(mx, s[size_t(j)]);
  }
  double sum = 0;
  for (double x : s) sum += std::exp(x - mx);
  return mx + std::log(sum);
}

}  // namespace

void rope_forward(const RopeArgs& a, const void* x, void* y) {
  visit_float(a.dt, [&](auto tag) { rope_apply<decltype(tag)>(a, x, y, 1.0, false); });
}

void rope_backward(const RopeArgs& a, const void* dy, void* dx) {
  visit_float(a.dt, [&](auto tag) { rope_apply<decltype(tag)>(a, dy, dx, -1.0, true); });
}

void attention_forward(const AttentionArgs& a, const void* q, const void* k, const void* v, void* o,
                       float* lse) {
  visit_float(a.dt, [&](auto tag) {
    using T = decltype(tag);
    std::vector<double> s;
    for (int64_t b = 0; b < a.B; ++b)
      for (int64_t t = 0; t < a.Tq; ++t)
        for (int64_t h = 0; h < a.NH; ++h) {
          const double l = scores<T>(a, q, k, b, t, h, s);
          lse[(b * a.NH + h) * a.Tq + t] = float(l);
          const int64_t kh = h / (a.NH / a.NKV);
          const int64_t oo = ((b * a.Tq + t) * a.NH + h) * a.HS;  // o is contiguous
          for (int64_t d = 0; d < a.HS; ++d) {
            double acc = 0;
            for (size_t j = 0; j < s.size(); ++j)
              acc += std::exp(s[j] - l) * ld<T>(v, kv_off(a, b, int64_t(j), kh) + d);
            st<T>(o, oo + d, acc);
          }
        }
  });
}

void attention_backward(const AttentionArgs& a, const void* dout, const void* q, const void* k,
                        const void* v, void* dq, void* dk, void* dv) {
  visit_float(a.dt, [&](auto tag) {
    using T = decltype(tag);
    // Gradients are summed in f64 over the whole call and added to the outputs once.
    const int64_t nq = (a.B - 1) * a.q_batch_stride + (a.Tq - 1) * a.q_row_stride + a.NH * a.HS;
    const int64_t nkv = (a.B - 1) * a.kv_batch_stride + (a.Tk - 1) * a.kv_row_stride + a.NKV * a.HS;
    if (a.B == 0 || a.Tq == 0) return;
    std::vector<double> gq(size_t(nq), 0.0), gk(size_t(nkv), 0.0), gv(size_t(nkv), 0.0);
    std::vector<double> s, dp;
    for (int64_t b = 0; b < a.B; ++b)
      for (int64_t t = 0; t < a.Tq; ++t)
        for (int64_t h = 0; h < a.NH; ++h) {
          const double l = scores<T>(a, q, k, b, t, h, s);
          const int64_t kh = h / (a.NH / a.NKV);
          const int64_t oo = ((b * a.Tq + t) * a.NH + h) * a.HS, qo = q_off(a, b, t, h);
          // p_j = softmax; dp_j = dout . v_j; D = sum_j p_j dp_j (= dout . o)
          dp.assign(s.size(), 0.0);
          double D = 0;
          for (size_t j = 0; j < s.size(); ++j) {
            s[j] = std::exp(s[j] - l);
            for (int64_t d = 0; d < a.HS; ++d)
              dp[j] += ld<T>(dout, oo + d) * ld<T>(v, kv_off(a, b, int64_t(j), kh) + d);
            D += s[j] * dp[j];
          }
          for (size_t j = 0; j < s.size(); ++j) {
            const int64_t ko = kv_off(a, b, int64_t(j), kh);
            const double ds = s[j] * (dp[j] - D) * double(a.scale);
            for (int64_t d = 0; d < a.HS; ++d) {
              gq[size_t(qo + d)] += ds * ld<T>(k, ko + d);
              gk[size_t(ko + d)] += ds * ld<T>(q, qo + d);
              gv[size_t(ko + d)] += s[j] * ld<T>(dout, oo + d);
            }
          }
        }
    // Write back only the elements that are part of the (B, T, heads, HS) views.
    for (int64_t b = 0; b < a.B; ++b) {
      for (int64_t t = 0; t < a.Tq; ++t)
        for (int64_t e = 0; e < a.NH * a.HS; ++e)
          st_add<T>(dq, q_off(a, b, t, 0) + e, gq[size_t(q_off(a, b, t, 0) + e)]);
      for (int64_t j = 0; j < a.Tk; ++j)
        for (int64_t e = 0; e < a.NKV * a.HS; ++e) {
          const int64_t i = kv_off(a, b, j, 0) + e;
          st_add<T>(dk, i, gk[size_t(i)]);
          st_add<T>(dv, i, gv[size_t(i)]);
        }
    }
  });
}

}  // namespace keel::backend::ref
