#include "serve/kv_cache.h"

namespace keel::serve {

KvSequence::KvSequence(KvCachePool* pool, int64_t n_layer, int64_t capacity, int64_t kv_dim)
    : pool_(pool),
      capacity_(capacity),
      kv_dim_(kv_dim),
      bytes_(pool->bytes_for(capacity)),
      // Not zeroed: a position is always written before attention reads it.
      data_(new float[size_t(n_layer) * 2 * size_t(capacity) * size_t(kv_dim)]) {}

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
