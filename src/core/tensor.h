// Tensor: a typed, shaped view over bytes that it owns (shared storage) or
// borrows (arena, mmap, caller buffer). The bytes live on the host or in a
// backend's device memory (backend/device_tensor.h makes those); a device
// tensor's address goes to kernels but never to host code, and moving
// between the host and a device is an explicit copy.
#pragma once
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/shape.h"

namespace keel {

class Arena;

enum class Device : uint8_t { Host, Accelerator };

// A block of bytes; frees itself when the last owning Tensor goes away.
struct Storage {
  void* data = nullptr;
  size_t bytes = 0;
  Device device = Device::Host;
  std::string device_name;             // the backend that owns device memory
  std::function<void(void*)> release;  // frees device memory (set by its backend)
  bool owned = false;                  // from host_alloc(allocated), freed with the storage
  size_t allocated = 0;
  ~Storage();
  static std::shared_ptr<Storage> allocate(size_t bytes);  // 64-byte aligned, zeroed
  static std::shared_ptr<Storage> borrow(void* data, size_t bytes);
  // Device memory at `data` that `release` frees; `name` names the device.
  static std::shared_ptr<Storage> on_device(void* data, size_t bytes, std::string name,
                                            std::function<void(void*)> release);
};

class Tensor {
 public:
  Tensor() = default;

  // New zero-filled host tensor.
  static Tensor zeros(const Shape& shape, DType dtype);
  // Non-owning view over memory the caller keeps alive.
  static Tensor view(void* data, const Shape& shape, DType dtype);
  // Tensor whose bytes live in the arena until its next reset (not zeroed).
  static Tensor in_arena(Arena& arena, const Shape& shape, DType dtype);
  // Copies of host vectors (shape must match the element count).
  static Tensor from_f32(const std::vector<float>& v, const Shape& shape);
  static Tensor from_i32(const std::vector<int32_t>& v, const Shape& shape);
  // A contiguous tensor over storage made elsewhere (a backend's device memory).
  static Tensor over(std::shared_ptr<Storage> storage, const Shape& shape, DType dtype);

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  int64_t dim(int i) const { return shape_[i]; }
  int rank() const { return shape_.rank(); }
  DType dtype() const { return dtype_; }
  int64_t numel() const { return shape_.numel(); }
  size_t nbytes() const { return dtype_bytes(dtype_, size_t(numel())); }
  const std::vector<int64_t>& strides() const { return strides_; }
  bool is_contiguous() const;
  // Where the bytes live. Host-only operations (clone, to, to_f32_vector,
  // fill_zero) on a device tensor throw, naming the device.
  bool on_host() const { return !storage_ || storage_->device == Device::Host; }
  const std::string& device_name() const;

  void* raw() const { return static_cast<char*>(storage_->data) + offset_; }
  template <class T>
  T* data() const {
    return static_cast<T*>(raw());
  }

  // Same bytes, new shape (contiguous tensors only; numel must match).
  Tensor reshape(const Shape& s) const;
  // Rows [start, start+len) along dim 0 (contiguous tensors only).
  Tensor slice_rows(int64_t start, int64_t len) const;
  // Deep copy into new owning storage.
  Tensor clone() const;
  // Element-wise conversion to another dtype (unblocked types only).
  Tensor to(DType dt) const;
  // Copies values out as f32 (unblocked types only).
  std::vector<float> to_f32_vector() const;
  void fill_zero();
  // "f32[2, 3]" for error messages ("f32[2, 3] on vulkan" for device tensors).
  std::string desc() const;

 private:
  void require_host(const char* what) const;

  std::shared_ptr<Storage> storage_;
  size_t offset_ = 0;  // bytes
  Shape shape_;
  std::vector<int64_t> strides_;  // elements
  DType dtype_ = DType::F32;
};

}  // namespace keel
