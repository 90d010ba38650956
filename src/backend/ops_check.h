// Validation helper shared by the ops_*.cpp files: collects the tensors of one
// kernel call so every error message names the kernel and each tensor's dtype
// and shape, e.g. "[layernorm] x f32[4, 7], w bf16[8]: w must be f32[7] ...".
#pragma once
#include <initializer_list>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "backend/backend.h"
#include "core/error.h"
#include "core/tensor.h"

namespace keel::ops::detail {

struct Named {
  const char* name;
  const Tensor* t;
};

// "f32[2, 3]", or "undefined" for a tensor that was never allocated.
inline std::string describe(const Tensor& t) {
  return t.defined() ? t.desc() : "undefined";
}

class Check {
 public:
  Check(const backend::Backend& be, backend::Kernel k, std::initializer_list<Named> args)
      : be_(be), k_(k), args_(args) {}

  // "[kernel] a f32[2, 3], b f32[3, 4]"
  std::string context() const {
    std::string s = fmt::format("[{}]", backend::kernel_name(k_));
    for (size_t i = 0; i < args_.size(); ++i)
      s += fmt::format("{}{} {}", i == 0 ? " " : ", ", args_[i].name, describe(*args_[i].t));
    return s;
  }

  template <class... A>
  void require(bool cond, fmt::format_string<A...> f, A&&... a) const {
    if (!cond)
      throw KernelError(fmt::format("{}: {}", context(), fmt::format(f, std::forward<A>(a)...)));
  }

  // Every named tensor except those listed in `optional` must be defined, and
  // every defined one contiguous and in the backend's memory (the host's for
  // ref and cpu, the device's for a device backend): nothing moves implicitly.
  void defined_and_contiguous(std::initializer_list<const char*> optional = {}) const {
    for (const Named& n : args_) {
      bool opt = false;
      for (const char* o : optional) opt = opt || std::string_view(o) == n.name;
      if (!n.t->defined()) {
        require(opt, "{} is undefined", n.name);
        continue;
      }
      require(n.t->is_contiguous(), "{} must be contiguous", n.name);
      const bool here =
          be_.host_memory() ? n.t->on_host() : !n.t->on_host() && n.t->device_name() == be_.name();
      require(here, "{} lives on {} but backend {} runs on {}: copy it there first", n.name,
              n.t->device_name(), be_.name(), be_.host_memory() ? "host memory" : "its device");
    }
  }

  void supported(DType dt) const {
    if (!be_.supports(k_, dt))
      throw KernelError(fmt::format("[{}] dtype {} not supported by backend {} ({})",
                                    backend::kernel_name(k_), dtype_name(dt), be_.name(),
                                    context().substr(backend::kernel_name(k_).size() + 3)));
  }

  // t must have exactly this dtype and shape.
  void like(const char* name, const Tensor& t, DType dt, const Shape& s,
            std::string_view why) const {
    require(t.dtype() == dt && t.shape() == s, "{} must be {}{} ({})", name, dtype_name(dt),
            s.str(), why);
  }
  // t must be f32 with n elements (any shape: statistics may be (N) or (B, T)).
  void f32_numel(const char* name, const Tensor& t, int64_t n, std::string_view why) const {
    require(t.dtype() == DType::F32 && t.numel() == n, "{} must be f32 with {} elements ({})", name,
            n, why);
  }

 private:
  const backend::Backend& be_;
  backend::Kernel k_;
  std::vector<Named> args_;
};

// Rows of a (..., C) tensor: numel / C (0 when C is 0).
inline int64_t rows_of(const Tensor& t) {
  int64_t c = t.shape()[-1];
  return c == 0 ? 0 : t.numel() / c;
}

}  // namespace keel::ops::detail
