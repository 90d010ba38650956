// Parameters laid end to end as one flat f32 vector, in parameter order: the
// layout of every whole-model exchange over a slow link (gradients, updates,
// pseudo-gradients) and of every per-rank tensor in a checkpoint.
#pragma once
#include <cstring>
#include <ranges>
#include <span>
#include <utility>
#include <vector>

#include "core/tensor.h"
#include "nn/parameter.h"

namespace keel::dist {

// Calls f(i, off, n) for each parameter index i of `indices`, in that order;
// parameter i holds [off, off + n) of the flat vector of those parameters (a
// bucket, a rank's shard).
template <class Indices, class F>
void for_each_slice(const std::vector<nn::Parameter*>& ps, const Indices& indices, F&& f) {
  size_t off = 0;
  for (const size_t i : indices) {
    const size_t n = size_t(ps[i]->numel());
    f(i, off, n);
    off += n;
  }
}

// The same over every parameter: the whole-model layout.
template <class F>
void for_each_slice(const std::vector<nn::Parameter*>& ps, F&& f) {
  for_each_slice(ps, std::views::iota(size_t(0), ps.size()), std::forward<F>(f));
}

// out := every parameter's `member` (value or grad), end to end.
inline void copy_to_flat(const std::vector<nn::Parameter*>& ps, Tensor nn::Parameter::*member,
                         std::span<float> out) {
  for_each_slice(ps, [&](size_t i, size_t off, size_t n) {
    std::memcpy(out.data() + off, ((*ps[i]).*member).raw(), n * sizeof(float));
  });
}

// Every parameter's `member` := its slice of in.
inline void copy_from_flat(std::span<const float> in, const std::vector<nn::Parameter*>& ps,
                           Tensor nn::Parameter::*member) {
  for_each_slice(ps, [&](size_t i, size_t off, size_t n) {
    std::memcpy(((*ps[i]).*member).raw(), in.data() + off, n * sizeof(float));
  });
}

// out := ts end to end, ts[i] shaped like ps[i] (optimizer moments); an
// undefined ts[i] (a moment ZeRO-1 released) leaves its slice as it was.
inline void copy_to_flat(const std::vector<nn::Parameter*>& ps, const std::vector<Tensor>& ts,
                         std::span<float> out) {
  for_each_slice(ps, [&](size_t i, size_t off, size_t n) {
    if (ts[i].defined()) std::memcpy(out.data() + off, ts[i].raw(), n * sizeof(float));
  });
}

// ts[i] := its slice of in (every ts[i] defined and shaped like ps[i]).
inline void copy_from_flat(std::span<const float> in, const std::vector<nn::Parameter*>& ps,
                           std::vector<Tensor>& ts) {
  for_each_slice(ps, [&](size_t i, size_t off, size_t n) {
    std::memcpy(ts[i].raw(), in.data() + off, n * sizeof(float));
  });
}

}  // namespace keel::dist
