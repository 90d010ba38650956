#include "serve/prefix_cache.h"

#include <algorithm>

namespace keel::serve {

namespace {

int64_t common_prefix(std::span<const int32_t> a, std::span<const int32_t> b) {
  const auto [ia, ib] = std::mismatch(a.begin(), a.end(), b.begin(), b.end());
  return int64_t(ia - a.begin());
}

}  // namespace

PrefixCache::PrefixCache(int64_t n_layer, int64_t kv_dim, size_t limit_bytes, backend::Backend* be,
                         DType dtype, CacheRowCopy copy)
    : pool_(n_layer, kv_dim, limit_bytes, be, dtype), copy_(std::move(copy)) {}

PrefixCache::Match PrefixCache::find(std::span<const int32_t> ids, int64_t max_length) {
  auto best = entries_.end();
  int64_t best_len = 0;
  for (auto it = entries_.begin(); it != entries_.end(); ++it) {
    const int64_t n = std::min(common_prefix(ids, it->tokens), max_length);
    if (n > best_len) {
      best_len = n;
      best = it;
    }
  }
  if (best == entries_.end()) return {};
  entries_.splice(entries_.begin(), entries_, best);
  return {best->rows.get(), best_len};
}

void PrefixCache::insert(std::span<const int32_t> ids, KvSequence& src) {
  const int64_t n = int64_t(ids.size());
  if (!enabled() || n < min_tokens() || pool_.bytes_for(n) > pool_.limit()) return;
  for (auto it = entries_.begin(); it != entries_.end();) {
    const int64_t common = common_prefix(ids, it->tokens);
    if (common == n) {  // already cached (as itself or inside a longer entry)
      entries_.splice(entries_.begin(), entries_, it);
      return;
    }
    // An entry ids extends holds nothing the new one will not.
    it = common == int64_t(it->tokens.size()) ? entries_.erase(it) : std::next(it);
  }
  std::unique_ptr<KvSequence> rows = pool_.try_allocate(n);
  while (!rows && !entries_.empty()) {
    entries_.pop_back();
    rows = pool_.try_allocate(n);
  }
  if (!rows) return;  // the host is out of memory: caching is optional
  copy_(*rows, src, n);
  entries_.push_front({std::vector<int32_t>(ids.begin(), ids.end()), std::move(rows)});
}

}  // namespace keel::serve
