#include "backend/device_tensor.h"

#include <cstring>

#include <fmt/format.h>

#include "core/error.h"

namespace keel::backend {

Tensor empty_on(Backend& be, const Shape& shape, DType dtype, std::string_view what) {
  if (be.host_memory()) return Tensor::zeros(shape, dtype);
  const size_t bytes = dtype_bytes(dtype, size_t(shape.numel()));
  // Named with its shape, so running out of device memory says what did not fit.
  const std::string label =
      fmt::format("{} {}{}", what.empty() ? std::string_view("a tensor") : what, dtype_name(dtype),
                  shape.str());
  void* p = be.allocate(bytes, label);
  Backend* owner = &be;
  return Tensor::over(
      Storage::on_device(p, bytes, std::string(be.name()), [owner](void* q) { owner->release(q); }),
      shape, dtype);
}

Tensor to_device(Backend& be, const Tensor& t, std::string_view what) {
  if (be.host_memory()) return t;
  if (!t.on_host())
    fail("to_device: tensor {} is already on {}, not the host", t.desc(), t.device_name());
  if (!t.is_contiguous()) fail("to_device: tensor {} is not contiguous", t.desc());
  Tensor d = empty_on(be, t.shape(), t.dtype(), what);
  be.upload(d.raw(), t.raw(), t.nbytes());
  return d;
}

Tensor to_host(Backend& be, const Tensor& t) {
  if (t.on_host()) return t;
  if (t.device_name() != be.name())
    fail("to_host: tensor {} lives on {}, not on backend {}", t.desc(), t.device_name(), be.name());
  Tensor h = Tensor::zeros(t.shape(), t.dtype());
  be.download(h.raw(), t.raw(), t.nbytes());
  return h;
}

namespace {

void check_pair(const char* what, const Tensor& a, const Tensor& b) {
  if (a.dtype() != b.dtype() || a.numel() != b.numel() || !a.is_contiguous() || !b.is_contiguous())
    fail("{}: {} and {} must be contiguous with one dtype and element count", what, a.desc(),
         b.desc());
}

}  // namespace

void copy_from_host(Backend& be, const Tensor& src, const Tensor& dst) {
  check_pair("copy_from_host", src, dst);
  if (!src.on_host()) fail("copy_from_host: source {} is not on the host", src.desc());
  if (dst.on_host())
    std::memcpy(dst.raw(), src.raw(), src.nbytes());
  else
    be.upload(dst.raw(), src.raw(), src.nbytes());
}

std::vector<Tensor> to_host_all(Backend& be, const std::vector<const Tensor*>& ts) {
  std::vector<Tensor> out(ts.size());
  std::vector<size_t> off(ts.size(), 0);
  size_t total = 0;
  for (size_t i = 0; i < ts.size(); ++i) {
    if (ts[i]->on_host()) {
      out[i] = *ts[i];
      continue;
    }
    if (!ts[i]->is_contiguous()) fail("to_host_all: {} is not contiguous", ts[i]->desc());
    off[i] = total;
    total += (ts[i]->nbytes() + 63) / 64 * 64;  // copies start aligned
  }
  if (total == 0) return out;
  void* d = be.allocate(total, "read-back staging");
  try {
    for (size_t i = 0; i < ts.size(); ++i)
      if (!out[i].defined())
        be.copy(static_cast<std::byte*>(d) + off[i], ts[i]->raw(), ts[i]->nbytes());
    std::vector<std::byte> host(total);
    be.download(host.data(), d, total);
    for (size_t i = 0; i < ts.size(); ++i)
      if (!out[i].defined()) {
        out[i] = Tensor::zeros(ts[i]->shape(), ts[i]->dtype());
        std::memcpy(out[i].raw(), host.data() + off[i], ts[i]->nbytes());
      }
  } catch (...) {
    be.release(d);
    throw;
  }
  be.release(d);
  return out;
}

void copy_to_host(Backend& be, const Tensor& t, const Tensor& dst) {
  check_pair("copy_to_host", t, dst);
  if (!dst.on_host()) fail("copy_to_host: destination {} is not on the host", dst.desc());
  if (t.on_host())
    std::memcpy(dst.raw(), t.raw(), t.nbytes());
  else
    be.download(dst.raw(), t.raw(), t.nbytes());
}

void fill_from_host(Backend& be, Tensor& dst, const std::function<void(Tensor&)>& fill) {
  if (dst.on_host()) {
    fill(dst);
    return;
  }
  Tensor host = Tensor::zeros(dst.shape(), dst.dtype());
  fill(host);
  copy_from_host(be, host, dst);
}

void zero(Backend& be, const Tensor& t) {
  if (t.on_host()) {
    Tensor h = t;
    h.fill_zero();
  } else {
    be.fill_zero(t.raw(), t.nbytes());
  }
}

ArenaMemory arena_memory(Backend& be) {
  if (be.host_memory()) return {};
  Backend* owner = &be;
  return {[owner](size_t bytes) { return owner->allocate(bytes, "activation arena"); },
          [owner](void* p) { owner->release(p); }, std::string(be.name())};
}

}  // namespace keel::backend
