// The KV cache: one preallocated block per sequence holding every layer's
// keys and values for up to `capacity` positions, drawn from a pool with a
// byte limit. A sequence that would push the pool past its limit is refused
// (try_allocate returns null), never allocated and never a crash.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "backend/backend.h"

namespace keel::serve {

class KvCachePool;

// Keys and values of one sequence: layer l's keys are rows [0, length) of a
// (capacity, kv_dim) matrix of the pool's dtype (f32, or bf16 for half the
// memory and half the bytes each decode step reads), likewise its values;
// the two are contiguous from keys(l), so a model that caches one latent row
// per token (deepseek's MLA, f32: 2 * kv_dim >= its width) uses them as one
// (capacity, 2 * kv_dim) block.
class KvSequence {
 public:
  ~KvSequence();
  KvSequence(const KvSequence&) = delete;
  KvSequence& operator=(const KvSequence&) = delete;

  int64_t capacity() const { return capacity_; }
  int64_t length() const { return length_; }  // positions filled so far
  void set_length(int64_t n) { length_ = n; }
  int64_t kv_dim() const { return kv_dim_; }
  DType dtype() const { return dtype_; }
  void* keys(int64_t layer) { return data_.get() + layer * 2 * capacity_ * kv_dim_ * elem_; }
  void* values(int64_t layer) {
    return static_cast<char*>(keys(layer)) + capacity_ * kv_dim_ * elem_;
  }
  size_t bytes() const { return bytes_; }

 private:
  friend class KvCachePool;
  KvSequence(KvCachePool* pool, int64_t capacity, int64_t kv_dim);
  KvCachePool* pool_;
  int64_t capacity_, kv_dim_, length_ = 0;
  DType dtype_;
  int64_t elem_;  // bytes per element
  size_t bytes_;
  std::unique_ptr<char, std::function<void(char*)>> data_;  // host heap or device memory
};

class KvCachePool {
 public:
  // be: a device backend whose memory holds the caches (null: the host heap).
  // dtype: F32 or BF16 (the model that fills the caches decides;
  // InferenceModel::kv_dtype).
  KvCachePool(int64_t n_layer, int64_t kv_dim, size_t limit_bytes, backend::Backend* be = nullptr,
              DType dtype = DType::F32);

  DType dtype() const { return dtype_; }
  // Bytes one sequence of `capacity` positions takes.
  size_t bytes_for(int64_t capacity) const {
    return size_t(n_layer_) * 2 * size_t(capacity) * size_t(kv_dim_) * dtype_size(dtype_);
  }
  // A sequence of `capacity` positions, or null when the limit would be passed.
  // The pool must outlive every sequence it hands out. Thread-safe.
  std::unique_ptr<KvSequence> try_allocate(int64_t capacity);

  size_t in_use() const;
  size_t limit() const { return limit_; }
  ~KvCachePool();

 private:
  friend class KvSequence;
  void release(size_t bytes);
  // Mapped host buffers (2 MiB and more) of finished sequences (two at most), kept for the
  // next ones while live and kept bytes stay within the limit: a fresh buffer
  // of tens of megabytes is page-faulted in again on every request (glibc
  // maps blocks this large anew each time; 650 ms for 76 MB on a virtual
  // machine), which cost a prefix-cache hit most of its time.
  char* take_free(size_t need, size_t* got);
  void give_free(char* p, size_t bytes);
  int64_t n_layer_, kv_dim_;
  DType dtype_;
  size_t limit_;
  backend::Backend* be_;
  mutable std::mutex mu_;
  size_t used_ = 0;
  size_t free_bytes_ = 0;
  std::vector<std::pair<size_t, char*>> free_;  // (bytes, buffer)
};

}  // namespace keel::serve
