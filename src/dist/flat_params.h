// Parameters laid end to end as one flat f32 vector, in parameter order: the
// layout of every whole-model exchange over a slow link (gradients, updates,
// pseudo-gradients) and of every per-rank tensor in a checkpoint. FlatStage
// moves that vector between the backend's tensors and the host, where the
// collectives and the codecs work.
#pragma once
#include <cstddef>
#include <cstring>
#include <ranges>
#include <span>
#include <utility>
#include <vector>

#include "backend/backend.h"
#include "core/error.h"
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

// Host staging of flat vectors of tensors that live in `be`'s memory (values,
// gradients, moments: each shaped like its parameter, contiguous f32).
//
// On a host-memory backend each tensor is one memcpy, as if there were no
// backend. On a device, downloading tensor by tensor would wait on the queue
// once per tensor; instead the tensors are copied device to device into one
// flat device buffer (ordered on the queue, no wait) which then crosses in a
// single download, and the way back is one upload and copies out. The buffer
// costs one flat vector of device memory, allocated at first use.
class FlatStage {
 public:
  explicit FlatStage(backend::Backend& be) : be_(be) {}
  ~FlatStage() {
    if (dev_) be_.release(dev_);
  }
  FlatStage(const FlatStage&) = delete;
  FlatStage& operator=(const FlatStage&) = delete;

  backend::Backend& backend() const { return be_; }

  // out := get(i) for i in indices, end to end. An undefined get(i) (a moment
  // ZeRO-1 released) leaves its slice of out as it was.
  template <class Indices, class Get>
  void to_host(const std::vector<nn::Parameter*>& ps, const Indices& indices, Get&& get,
               std::span<float> out) {
    const size_t total = count(ps, indices);
    check_size(out.size(), total);
    if (be_.host_memory()) {
      for_each_slice(ps, indices, [&](size_t i, size_t off, size_t n) {
        const Tensor& t = get(i);
        if (t.defined()) std::memcpy(out.data() + off, t.raw(), n * sizeof(float));
      });
      return;
    }
    if (total == 0) return;
    reserve(total);
    bool all_defined = true;
    for_each_slice(ps, indices, [&](size_t i, size_t off, size_t n) {
      const Tensor& t = get(i);
      if (t.defined())
        be_.copy(at(off), t.raw(), n * sizeof(float));
      else
        all_defined = false;
    });
    if (all_defined) {
      be_.download(out.data(), dev_, total * sizeof(float));
      return;
    }
    // The device buffer holds stale bytes where a tensor is missing.
    scratch_.resize(total);
    be_.download(scratch_.data(), dev_, total * sizeof(float));
    for_each_slice(ps, indices, [&](size_t i, size_t off, size_t n) {
      if (get(i).defined()) std::memcpy(out.data() + off, scratch_.data() + off, n * sizeof(float));
    });
  }

  // get(i) := its slice of in, for i in indices (every get(i) defined).
  template <class Indices, class Get>
  void from_host(std::span<const float> in, const std::vector<nn::Parameter*>& ps,
                 const Indices& indices, Get&& get) {
    const size_t total = count(ps, indices);
    check_size(in.size(), total);
    if (be_.host_memory()) {
      for_each_slice(ps, indices, [&](size_t i, size_t off, size_t n) {
        std::memcpy(get(i).raw(), in.data() + off, n * sizeof(float));
      });
      return;
    }
    if (total == 0) return;
    reserve(total);
    be_.upload(dev_, in.data(), total * sizeof(float));
    for_each_slice(ps, indices, [&](size_t i, size_t off, size_t n) {
      be_.copy(get(i).raw(), at(off), n * sizeof(float));
    });
  }

  // Every parameter's `member` (value or grad), end to end.
  void to_host(const std::vector<nn::Parameter*>& ps, Tensor nn::Parameter::*member,
               std::span<float> out) {
    to_host(
        ps, std::views::iota(size_t(0), ps.size()),
        [&](size_t i) -> const Tensor& { return (*ps[i]).*member; }, out);
  }
  void from_host(std::span<const float> in, const std::vector<nn::Parameter*>& ps,
                 Tensor nn::Parameter::*member) {
    from_host(in, ps, std::views::iota(size_t(0), ps.size()),
              [&](size_t i) -> const Tensor& { return (*ps[i]).*member; });
  }
  // ts shaped like ps (optimizer moments), end to end.
  void to_host(const std::vector<nn::Parameter*>& ps, const std::vector<Tensor>& ts,
               std::span<float> out) {
    to_host(
        ps, std::views::iota(size_t(0), ps.size()),
        [&](size_t i) -> const Tensor& { return ts[i]; }, out);
  }
  void from_host(std::span<const float> in, const std::vector<nn::Parameter*>& ps,
                 const std::vector<Tensor>& ts) {
    from_host(in, ps, std::views::iota(size_t(0), ps.size()),
              [&](size_t i) -> const Tensor& { return ts[i]; });
  }

 private:
  template <class Indices>
  static size_t count(const std::vector<nn::Parameter*>& ps, const Indices& indices) {
    size_t total = 0;
    for (const size_t i : indices) total += size_t(ps[i]->numel());
    return total;
  }
  void* at(size_t off) const { return static_cast<std::byte*>(dev_) + off * sizeof(float); }
  static void check_size(size_t have, size_t need) {
    if (have != need)
      fail<DistError>("FlatStage: a flat vector of {} floats for tensors of {}", have, need);
  }
  // Grows the device buffer to n floats (its contents are dropped: called
  // before a transfer fills it).
  void reserve(size_t n) {
    if (n <= cap_) return;
    if (dev_) be_.release(dev_);
    dev_ = nullptr;
    dev_ = be_.allocate(n * sizeof(float), "dist flat staging");
    cap_ = n;
  }

  backend::Backend& be_;
  void* dev_ = nullptr;
  size_t cap_ = 0;
  std::vector<float> scratch_;
};

}  // namespace keel::dist
