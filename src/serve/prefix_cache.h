// Automatic prefix caching: the KV rows of finished sequences, kept by their
// token ids within a byte budget (least recently used out first), so a new
// request whose prompt starts with a cached sequence's tokens (a repeated
// system prompt, a chat history one turn longer) copies those rows instead
// of prefilling them again.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <span>
#include <vector>

#include "backend/backend.h"
#include "serve/kv_cache.h"

namespace keel::serve {

// Copies the first n cache rows of src into dst in the model's cache layout
// (InferenceModel::copy_cache_prefix).
using CacheRowCopy = std::function<void(KvSequence& dst, KvSequence& src, int64_t n)>;

// Entries are whole token sequences with their rows copied into a pool of
// their own at their exact length (the engine's caches are contiguous per
// sequence, not paged, so rows cannot be shared in place). A lookup scans the
// entries for the longest common prefix: the budget holds few entries (a
// 1,000-token gpt2-small prefix is 73 MB of rows), so the scan compares a few
// thousand ids, microseconds against the milliseconds of prefill it saves,
// and needs no index to keep consistent on eviction.
class PrefixCache {
 public:
  // limit_bytes: the budget for cached rows (0: the cache is off). be and
  // dtype: where the rows live and their element type, as for KvCachePool.
  PrefixCache(int64_t n_layer, int64_t kv_dim, size_t limit_bytes, backend::Backend* be,
              DType dtype, CacheRowCopy copy);

  bool enabled() const { return pool_.limit() > 0; }

  struct Match {
    KvSequence* rows = nullptr;  // valid until the next insert
    int64_t length = 0;          // tokens of ids whose rows it holds
  };
  // The cached sequence sharing the longest prefix with ids, that prefix
  // capped at max_length (a prefill needs at least one token of its own).
  // Marks the entry used. length 0: no entry shares a token.
  Match find(std::span<const int32_t> ids, int64_t max_length);

  // Keeps rows [0, ids.size()) of src, whose tokens are ids. Sequences
  // shorter than min_tokens(), already covered by an entry, or larger than
  // the whole budget are not kept; an entry that ids extends is replaced.
  void insert(std::span<const int32_t> ids, KvSequence& src);

  // Shorter sequences are cheap to prefill and would churn the cache.
  static constexpr int64_t min_tokens() { return 16; }
  size_t bytes_in_use() const { return pool_.in_use(); }
  size_t limit() const { return pool_.limit(); }
  int64_t entries() const { return int64_t(entries_.size()); }

 private:
  struct Entry {
    std::vector<int32_t> tokens;
    std::unique_ptr<KvSequence> rows;
  };
  KvCachePool pool_;
  CacheRowCopy copy_;
  std::list<Entry> entries_;  // most recently used first
};

}  // namespace keel::serve
