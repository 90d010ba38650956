#include "serve/kv_cache.h"

#include <new>

#include "core/error.h"
#include "core/host_memory.h"

namespace keel::serve {

namespace {

// A sequence's rows are first touched one position at a time as it decodes,
// so on 4 KiB pages nearly every token of every layer took a page fault (on
// a virtual machine ~35 us each: 0.4-0.5 ms of a 10 ms f32 token). From 2 MiB
// on, buffers are mapped in 2 MiB pages (the padding is at most one page);
// smaller ones come from the heap and are not worth keeping.
constexpr size_t kMappedMin = size_t(2) << 20;
constexpr size_t kKeptMin = kMappedMin;
// Finished buffers kept for reuse: enough for requests that follow one
// another (a chat turn after a turn, a prefix-cache entry replacing the one
// it evicted) without holding a burst's worth of memory afterwards.
constexpr size_t kMaxFree = 2;

}  // namespace

KvSequence::KvSequence(KvCachePool* pool, int64_t capacity, int64_t kv_dim)
    : pool_(pool),
      capacity_(capacity),
      kv_dim_(kv_dim),
      dtype_(pool->dtype_),
      elem_(int64_t(dtype_size(pool->dtype_))),
      bytes_(pool->bytes_for(capacity)),
      data_(nullptr, [](char*) {}) {
  backend::Backend* be = pool->be_;
  if (be && !be->host_memory()) {
    data_ = {static_cast<char*>(be->allocate(bytes_, "KV cache")),
             [be](char* p) { be->release(p); }};
  } else {
    // Not zeroed: a position is always written before attention reads it.
    size_t got = 0;
    char* p = pool->take_free(bytes_, &got);
    if (!p) {
      got = bytes_;
      p = static_cast<char*>(host_alloc(got, kMappedMin));
    }
    data_ = {p, [pool, got](char* q) { pool->give_free(q, got); }};
  }
}

KvSequence::~KvSequence() {
  pool_->release(bytes_);
}

KvCachePool::KvCachePool(int64_t n_layer, int64_t kv_dim, size_t limit_bytes, backend::Backend* be,
                         DType dtype)
    : n_layer_(n_layer), kv_dim_(kv_dim), dtype_(dtype), limit_(limit_bytes), be_(be) {
  if (dtype != DType::F32 && dtype != DType::BF16)
    fail<ConfigError>("KV cache dtype {}: only f32 and bf16 caches exist", dtype_name(dtype));
}

std::unique_ptr<KvSequence> KvCachePool::try_allocate(int64_t capacity) {
  const size_t need = bytes_for(capacity);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (capacity <= 0 || need > limit_ - used_ || used_ > limit_) return nullptr;
    used_ += need;
  }
  try {
    return std::unique_ptr<KvSequence>(new KvSequence(this, capacity, kv_dim_));
  } catch (const std::bad_alloc&) {
    release(need);  // the host itself is out of memory: refuse like a full pool
    return nullptr;
  } catch (...) {
    release(need);  // a device out of memory names itself in the error
    throw;
  }
}

KvCachePool::~KvCachePool() {
  for (auto& [bytes, p] : free_) host_free(p, bytes, kMappedMin);
}

char* KvCachePool::take_free(size_t need, size_t* got) {
  std::lock_guard<std::mutex> lock(mu_);
  // The smallest kept buffer that holds need and wastes at most a quarter of it.
  size_t best = free_.size();
  for (size_t i = 0; i < free_.size(); ++i)
    if (free_[i].first >= need && free_[i].first <= need + need / 4 &&
        (best == free_.size() || free_[i].first < free_[best].first))
      best = i;
  if (best == free_.size()) return nullptr;
  char* p = free_[best].second;
  *got = free_[best].first;
  free_bytes_ -= *got;
  free_.erase(free_.begin() + std::ptrdiff_t(best));
  return p;
}

void KvCachePool::give_free(char* p, size_t bytes) {
  if (bytes >= kKeptMin) {
    std::lock_guard<std::mutex> lock(mu_);
    if (free_.size() < kMaxFree && used_ + free_bytes_ + bytes <= limit_) {
      free_.emplace_back(bytes, p);
      free_bytes_ += bytes;
      return;
    }
  }
  host_free(p, bytes, kMappedMin);
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
