#include "serve/kv_cache.h"

namespace keel::serve {

KvSequence::KvSequence(KvCachePool* pool, int64_t n_layer, int64_t capacity, int64_t kv_dim)
    : pool_(pool),
      capacity_(capacity),
      kv_dim_(kv_dim),
      bytes_(pool->bytes_for(capacity)),
      data_(nullptr, [](float*) {}) {
  const size_t n = size_t(n_layer) * 2 * size_t(capacity) * size_t(kv_dim);
  backend::Backend* be = pool->be_;
  if (be && !be->host_memory()) {
    data_ = {static_cast<float*>(be->allocate(n * sizeof(float), "KV cache")),
             [be](float* p) { be->release(p); }};
  } else {
    // Not zeroed: a position is always written before attention reads it.
    data_ = {new float[n], [](float* p) { delete[] p; }};
  }
}

KvSequence::~KvSequence() {
  pool_->release(bytes_);
}

std::unique_ptr<KvSequence> KvCachePool::try_allocate(int64_t capacity) {
  const size_t need = bytes_for(capacity);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (capacity <= 0 || need > limit_ - used_ || used_ > limit_) return nullptr;
    used_ += need;
  }
  try {
    return std::unique_ptr<KvSequence>(new KvSequence(this, n_layer_, capacity, kv_dim_));
  } catch (const std::bad_alloc&) {
    release(need);  // the host itself is out of memory: refuse like a full pool
    return nullptr;
  } catch (...) {
    release(need);  // a device out of memory names itself in the error
    throw;
  }
}

size_t KvCachePool::in_use() const {
  std::lock_guard<std::mutex> lock(mu_);
  return used_;
}

void KvCachePool::release(size_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  used_ -= bytes;
}

}  // namespace keel::serve
