// Tokenizer::train: learns byte-level BPE merges from pre-token counts with
// incremental pair-count updates. Each merge touches only the words that
// contain the merged pair, found through a pair -> words index; a max-heap with
// lazy invalidation picks the next pair.
#include <algorithm>
#include <queue>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "core/error.h"
#include "core/log.h"
#include "data/pretokenizer.h"
#include "data/tokenizer.h"

namespace keel::data {

namespace {

inline uint64_t pair_key(int32_t a, int32_t b) {
  return (uint64_t(uint32_t(a)) << 32) | uint32_t(b);
}

struct SvHash {
  size_t operator()(std::string_view s) const { return size_t(XXH3_64bits(s.data(), s.size())); }
};

struct HeapEntry {
  int64_t count;
  uint64_t key;
};
// Most frequent first; ties go to the smallest (left, right) ids.
struct HeapLess {
  bool operator()(const HeapEntry& x, const HeapEntry& y) const {
    return x.count != y.count ? x.count < y.count : x.key > y.key;
  }
};

}  // namespace

Tokenizer Tokenizer::train(std::span<const std::string_view> documents,
                           const BpeTrainOptions& opt) {
  const int64_t n_special = int64_t(opt.special_tokens.size());
  if (opt.vocab_size < 256 + n_special)
    fail("bpe train: vocab_size {} is below 256 byte tokens + {} special tokens", opt.vocab_size,
         n_special);

  // 1. Pre-token counts, in order of first appearance (keeps training deterministic).
  std::unordered_map<std::string_view, int64_t, SvHash> index;
  std::vector<std::string_view> uniq;
  std::vector<int64_t> freq;
  std::vector<std::string_view> pieces;
  for (auto doc : documents) {
    pieces.clear();
    pretokenize(doc, pieces);
    for (auto p : pieces) {
      auto [it, fresh] = index.try_emplace(p, int64_t(uniq.size()));
      if (fresh) {
        uniq.push_back(p);
        freq.push_back(0);
      }
      ++freq[size_t(it->second)];
    }
  }
  std::vector<std::vector<int32_t>> words;
  std::vector<int64_t> counts;
  for (size_t i = 0; i < uniq.size(); ++i) {
    if (freq[i] < opt.min_count || uniq[i].size() < 2) continue;
    std::vector<int32_t> w(uniq[i].size());
    for (size_t k = 0; k < w.size(); ++k) w[k] = static_cast<unsigned char>(uniq[i][k]);
    words.push_back(std::move(w));
    counts.push_back(freq[i]);
  }

  // 2. Initial pair counts and where each pair occurs.
  std::unordered_map<uint64_t, int64_t> pair_count;
  std::unordered_map<uint64_t, std::vector<int32_t>> pair_words;
  for (size_t wi = 0; wi < words.size(); ++wi) {
    const auto& w = words[wi];
    for (size_t k = 0; k + 1 < w.size(); ++k) {
      const uint64_t key = pair_key(w[k], w[k + 1]);
      pair_count[key] += counts[wi];
      auto& lst = pair_words[key];
      if (lst.empty() || lst.back() != int32_t(wi)) lst.push_back(int32_t(wi));
    }
  }
  std::priority_queue<HeapEntry, std::vector<HeapEntry>, HeapLess> heap;
  for (const auto& [key, c] : pair_count) heap.push({c, key});

  std::vector<std::string> vocab(256);
  std::unordered_map<std::string, int32_t> by_bytes;
  for (int b = 0; b < 256; ++b) {
    vocab[size_t(b)] = std::string(1, char(b));
    by_bytes.emplace(vocab[size_t(b)], b);
  }
  std::vector<std::pair<int32_t, int32_t>> merges;
  const int64_t target = int64_t(opt.vocab_size) - n_special;

  // 3. Merge until the vocab is full or no pair is left.
  std::vector<int32_t> fresh;
  std::vector<std::pair<uint64_t, int64_t>> delta;
  while (int64_t(vocab.size()) < target && !heap.empty()) {
    const HeapEntry top = heap.top();
    heap.pop();
    auto pc = pair_count.find(top.key);
    const int64_t cur = pc == pair_count.end() ? 0 : pc->second;
    if (cur != top.count) {  // stale: re-queue with the current count
      if (cur > 0) heap.push({cur, top.key});
      continue;
    }
    if (cur <= 0) continue;
    const auto a = int32_t(top.key >> 32), b = int32_t(top.key & 0xffffffffu);
    std::string joined = vocab[size_t(a)] + vocab[size_t(b)];
    int32_t m;
    if (auto it = by_bytes.find(joined); it != by_bytes.end()) {
      m = it->second;  // same bytes reached by another merge order: reuse the token
    } else {
      m = int32_t(vocab.size());
      by_bytes.emplace(joined, m);
      vocab.push_back(std::move(joined));
    }
    merges.emplace_back(a, b);

    auto lst = std::move(pair_words[top.key]);
    pair_words.erase(top.key);
    std::sort(lst.begin(), lst.end());
    lst.erase(std::unique(lst.begin(), lst.end()), lst.end());
    for (int32_t wi : lst) {
      auto& w = words[size_t(wi)];
      const int64_t c = counts[size_t(wi)];
      fresh.clear();
      bool hit = false;
      for (size_t k = 0; k < w.size();) {
        if (k + 1 < w.size() && w[k] == a && w[k + 1] == b) {
          fresh.push_back(m);
          k += 2;
          hit = true;
        } else {
          fresh.push_back(w[k++]);
        }
      }
      if (!hit) continue;
      delta.clear();
      for (size_t k = 0; k + 1 < w.size(); ++k) delta.push_back({pair_key(w[k], w[k + 1]), -c});
      for (size_t k = 0; k + 1 < fresh.size(); ++k)
        delta.push_back({pair_key(fresh[k], fresh[k + 1]), c});
      std::sort(delta.begin(), delta.end());
      for (size_t k = 0; k < delta.size();) {
        const uint64_t key = delta[k].first;
        int64_t d = 0;
        while (k < delta.size() && delta[k].first == key) d += delta[k++].second;
        if (d == 0) continue;
        int64_t& pcnt = pair_count[key];
        pcnt += d;
        if (d > 0) {
          heap.push({pcnt, key});
          if (key != top.key) pair_words[key].push_back(wi);
        }
        if (pcnt == 0) pair_count.erase(key);
      }
      w.swap(fresh);
    }
    pair_count.erase(top.key);
  }
  if (int64_t(vocab.size()) < target)
    log().warn("bpe train: corpus ran out of pairs at {} tokens (asked for {})",
               vocab.size() + size_t(n_special), opt.vocab_size);
  std::vector<SpecialToken> specials;
  for (const auto& s : opt.special_tokens) {
    specials.push_back({s, int32_t(vocab.size())});
    vocab.push_back(s);
  }
  return from_parts(std::move(vocab), std::move(merges), std::move(specials));
}

}  // namespace keel::data
