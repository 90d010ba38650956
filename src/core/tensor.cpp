#include "core/tensor.h"

#include <cstdlib>
#include <cstring>
#include <new>

#include "core/arena.h"
#include "core/error.h"
#include "core/host_memory.h"

namespace keel {

static void check_shape(const Shape& shape, DType dtype);

Storage::~Storage() {
  if (release) release(data);
  if (owned) host_free(data, allocated);
}

std::shared_ptr<Storage> Storage::on_device(void* data, size_t bytes, std::string name,
                                            std::function<void(void*)> release) {
  auto s = std::make_shared<Storage>();
  s->data = data;
  s->bytes = bytes;
  s->device = Device::Accelerator;
  s->device_name = std::move(name);
  s->release = std::move(release);
  return s;
}

const std::string& Tensor::device_name() const {
  static const std::string host = "host";
  return on_host() ? host : storage_->device_name;
}

void Tensor::require_host(const char* what) const {
  if (!on_host())
    fail("{} of tensor {}: its bytes live on {}, copy it to the host first (backend::to_host)",
         what, desc(), device_name());
}

Tensor Tensor::over(std::shared_ptr<Storage> storage, const Shape& shape, DType dtype) {
  check_shape(shape, dtype);
  Tensor t;
  t.shape_ = shape;
  t.dtype_ = dtype;
  t.strides_ = shape.contiguous_strides();
  if (storage->bytes < t.nbytes())
    fail("tensor {}{} needs {} bytes, its storage has {}", dtype_name(dtype), shape.str(),
         t.nbytes(), storage->bytes);
  t.storage_ = std::move(storage);
  return t;
}

std::shared_ptr<Storage> Storage::allocate(size_t bytes) {
  auto s = std::make_shared<Storage>();
  size_t rounded = (bytes + 63) / 64 * 64;
  if (rounded == 0) rounded = 64;
  try {
    s->data = host_alloc(rounded);
  } catch (const std::bad_alloc&) {
    fail("out of memory allocating {} bytes", bytes);
  }
  s->allocated = rounded;
  s->owned = true;
  std::memset(s->data, 0, rounded);
  s->bytes = bytes;
  return s;
}

std::shared_ptr<Storage> Storage::borrow(void* data, size_t bytes) {
  auto s = std::make_shared<Storage>();
  s->data = data;
  s->bytes = bytes;
  return s;
}

static void check_shape(const Shape& shape, DType dtype) {
  for (int64_t d : shape.dims())
    if (d < 0) fail("tensor shape {} has a negative extent", shape.str());
  if (dtype_is_blocked(dtype) && (shape.rank() == 0 || shape[-1] % kQBlock != 0))
    fail("{} tensor of shape {}: last dim must be a multiple of {}", dtype_name(dtype), shape.str(),
         kQBlock);
}

Tensor Tensor::zeros(const Shape& shape, DType dtype) {
  check_shape(shape, dtype);
  Tensor t;
  t.shape_ = shape;
  t.dtype_ = dtype;
  t.strides_ = shape.contiguous_strides();
  t.storage_ = Storage::allocate(t.nbytes());
  return t;
}

Tensor Tensor::view(void* data, const Shape& shape, DType dtype) {
  check_shape(shape, dtype);
  Tensor t;
  t.shape_ = shape;
  t.dtype_ = dtype;
  t.strides_ = shape.contiguous_strides();
  t.storage_ = Storage::borrow(data, t.nbytes());
  return t;
}

Tensor Tensor::in_arena(Arena& arena, const Shape& shape, DType dtype) {
  check_shape(shape, dtype);
  const size_t bytes = dtype_bytes(dtype, size_t(shape.numel()));
  void* p = arena.alloc(bytes);
  if (arena.device().empty()) return view(p, shape, dtype);
  return over(Storage::on_device(p, bytes, arena.device(), nullptr), shape, dtype);
}

Tensor Tensor::from_f32(const std::vector<float>& v, const Shape& shape) {
  if (int64_t(v.size()) != shape.numel())
    fail("from_f32: {} values do not fill shape {}", v.size(), shape.str());
  Tensor t = zeros(shape, DType::F32);
  std::memcpy(t.raw(), v.data(), v.size() * 4);
  return t;
}

Tensor Tensor::from_i32(const std::vector<int32_t>& v, const Shape& shape) {
  if (int64_t(v.size()) != shape.numel())
    fail("from_i32: {} values do not fill shape {}", v.size(), shape.str());
  Tensor t = zeros(shape, DType::I32);
  std::memcpy(t.raw(), v.data(), v.size() * 4);
  return t;
}

bool Tensor::is_contiguous() const {
  return strides_ == shape_.contiguous_strides();
}

Tensor Tensor::reshape(const Shape& s) const {
  if (!is_contiguous()) fail("reshape of non-contiguous tensor {}", desc());
  if (s.numel() != numel()) fail("cannot reshape {} to {}", desc(), s.str());
  Tensor t = *this;
  t.shape_ = s;
  t.strides_ = s.contiguous_strides();
  return t;
}

Tensor Tensor::slice_rows(int64_t start, int64_t len) const {
  if (!is_contiguous() || rank() == 0) fail("slice_rows of non-contiguous tensor {}", desc());
  if (start < 0 || len < 0 || start + len > shape_[0])
    fail("slice_rows [{}, {}) out of range for {}", start, start + len, desc());
  Tensor t = *this;
  int64_t row = numel() / (shape_[0] == 0 ? 1 : shape_[0]);
  t.offset_ += dtype_bytes(dtype_, size_t(row * start));
  t.shape_[0] = len;
  return t;
}

Tensor Tensor::clone() const {
  require_host("clone");
  if (!is_contiguous()) fail("clone of non-contiguous tensor {}", desc());
  Tensor t = zeros(shape_, dtype_);
  std::memcpy(t.raw(), raw(), nbytes());
  return t;
}

std::vector<float> Tensor::to_f32_vector() const {
  require_host("to_f32_vector");
  if (!is_contiguous()) fail("to_f32_vector of non-contiguous tensor {}", desc());
  std::vector<float> out(static_cast<size_t>(numel()));
  const size_t n = out.size();
  switch (dtype_) {
    case DType::F32:
      std::memcpy(out.data(), raw(), n * 4);
      break;
    case DType::BF16:
      for (size_t i = 0; i < n; ++i) out[i] = bf16_to_f32(data<uint16_t>()[i]);
      break;
    case DType::F16:
      for (size_t i = 0; i < n; ++i) out[i] = f16_to_f32(data<uint16_t>()[i]);
      break;
    case DType::I8:
      for (size_t i = 0; i < n; ++i) out[i] = float(data<int8_t>()[i]);
      break;
    case DType::I32:
      for (size_t i = 0; i < n; ++i) out[i] = float(data<int32_t>()[i]);
      break;
    default:
      fail("to_f32_vector: unsupported dtype {}", dtype_name(dtype_));
  }
  return out;
}

Tensor Tensor::to(DType dt) const {
  std::vector<float> v = to_f32_vector();
  Tensor t = zeros(shape_, dt);
  const size_t n = v.size();
  switch (dt) {
    case DType::F32:
      std::memcpy(t.raw(), v.data(), n * 4);
      break;
    case DType::BF16:
      for (size_t i = 0; i < n; ++i) t.data<uint16_t>()[i] = f32_to_bf16(v[i]);
      break;
    case DType::F16:
      for (size_t i = 0; i < n; ++i) t.data<uint16_t>()[i] = f32_to_f16(v[i]);
      break;
    default:
      fail("Tensor::to: unsupported target dtype {}", dtype_name(dt));
  }
  return t;
}

void Tensor::fill_zero() {
  require_host("fill_zero");
  if (!is_contiguous()) fail("fill_zero of non-contiguous tensor {}", desc());
  std::memset(raw(), 0, nbytes());
}

std::string Tensor::desc() const {
  if (!on_host()) return fmt::format("{}{} on {}", dtype_name(dtype_), shape_.str(), device_name());
  return fmt::format("{}{}", dtype_name(dtype_), shape_.str());
}

}  // namespace keel
