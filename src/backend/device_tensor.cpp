#include "backend/device_tensor.h"

#include "core/error.h"

namespace keel::backend {

Tensor empty_on(Backend& be, const Shape& shape, DType dtype, std::string_view what) {
  if (be.host_memory()) return Tensor::zeros(shape, dtype);
  const size_t bytes = dtype_bytes(dtype, size_t(shape.numel()));
  void* p = be.allocate(bytes, what.empty() ? std::string_view("a tensor") : what);
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

}  // namespace keel::backend
