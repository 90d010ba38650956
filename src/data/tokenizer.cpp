// Tokenizer construction, validation, identity hash, encode and decode. Loading
// and saving live in tokenizer_io.cpp, training in bpe_trainer.cpp.
#include "data/tokenizer.h"

#include <algorithm>
#include <mutex>
#include <queue>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "core/error.h"
#include "data/pretokenizer.h"

namespace keel::data {

namespace {
inline uint64_t pair_key(int32_t a, int32_t b) {
  return (uint64_t(uint32_t(a)) << 32) | uint32_t(b);
}

struct SvHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return size_t(XXH3_64bits(s.data(), s.size())); }
};
// Words longer than this (in bytes) use the heap-based merge loop.
constexpr size_t kShortWord = 64;
// The cache is dropped when it grows past this many words (bounded memory).
constexpr size_t kCacheMaxWords = 1 << 20;
}  // namespace

struct Tokenizer::Cache {
  std::mutex mu;
  std::unordered_map<std::string, std::vector<int32_t>, SvHash, std::equal_to<>> words;
};

Tokenizer Tokenizer::from_parts(std::vector<std::string> vocab,
                                std::vector<std::pair<int32_t, int32_t>> merges,
                                std::vector<SpecialToken> specials) {
  Tokenizer t;
  t.vocab_ = std::move(vocab);
  t.merges_ = std::move(merges);
  t.specials_ = std::move(specials);
  t.build_tables();
  return t;
}

void Tokenizer::build_tables() {
  const auto n = int64_t(vocab_.size());
  if (n > INT32_MAX) fail("tokenizer: vocab of {} entries is too large", n);
  is_special_.assign(size_t(n), false);
  for (const auto& s : specials_) {
    if (s.id < 0 || s.id >= n)
      fail("tokenizer: special token '{}' has id {} outside [0, {})", s.text, s.id, n);
    if (is_special_[size_t(s.id)]) fail("tokenizer: id {} is used by two special tokens", s.id);
    if (s.text.empty()) fail("tokenizer: special token {} has empty text", s.id);
    is_special_[size_t(s.id)] = true;
  }
  std::unordered_map<std::string_view, int32_t> by_bytes;
  by_bytes.reserve(size_t(n));
  for (int32_t id = 0; id < n; ++id) {
    if (is_special_[size_t(id)]) continue;
    const auto& b = vocab_[size_t(id)];
    if (b.empty()) fail("tokenizer: token {} is empty", id);
    if (!by_bytes.emplace(b, id).second)
      fail("tokenizer: tokens {} and {} have the same bytes", by_bytes[b], id);
  }
  for (int b = 0; b < 256; ++b) {
    const char c = char(b);
    auto it = by_bytes.find(std::string_view(&c, 1));
    if (it == by_bytes.end()) fail("tokenizer: byte 0x{:02x} has no token", b);
    byte_id_[b] = it->second;
  }
  merge_rank_.clear();
  merge_rank_.reserve(merges_.size() * 2);
  std::string joined;
  for (size_t r = 0; r < merges_.size(); ++r) {
    const auto [a, b] = merges_[r];
    if (a < 0 || a >= n || b < 0 || b >= n || is_special_[size_t(a)] || is_special_[size_t(b)])
      fail("tokenizer: merge {} ({}, {}) refers to a missing or special token", r, a, b);
    joined = vocab_[size_t(a)] + vocab_[size_t(b)];
    auto it = by_bytes.find(joined);
    if (it == by_bytes.end())
      fail("tokenizer: merge {} ({}, {}) makes a token not in the vocab", r, a, b);
    // A repeated pair keeps its last rank, as GPT-2's dict(zip(merges, ranks)) does.
    merge_rank_[pair_key(a, b)] = {int32_t(r), it->second};
  }
  // Identity: lengths-prefixed vocab, merges and specials.
  XXH3_state_t* st = XXH3_createState();
  XXH3_64bits_reset(st);
  auto put_u64 = [&](uint64_t v) { XXH3_64bits_update(st, &v, sizeof v); };
  put_u64(uint64_t(n));
  for (const auto& v : vocab_) {
    put_u64(v.size());
    XXH3_64bits_update(st, v.data(), v.size());
  }
  put_u64(merges_.size());
  for (const auto& [a, b] : merges_) put_u64(pair_key(a, b));
  put_u64(specials_.size());
  for (const auto& s : specials_) {
    put_u64(uint64_t(s.id));
    put_u64(s.text.size());
    XXH3_64bits_update(st, s.text.data(), s.text.size());
  }
  hash_ = XXH3_64bits_digest(st);
  XXH3_freeState(st);
  id_ = fmt::format("bpe-{:016x}", hash_);
  cache_ = std::make_shared<Cache>();
}

int32_t Tokenizer::special_id(std::string_view text) const {
  for (const auto& s : specials_)
    if (s.text == text) return s.id;
  return -1;
}

const std::string& Tokenizer::token_bytes(int32_t id) const {
  if (id < 0 || id >= vocab_size()) fail("tokenizer: id {} outside [0, {})", id, vocab_size());
  return vocab_[size_t(id)];
}

// Applies the merges to one pre-token: repeatedly take the lowest-ranked pair
// present and merge all its occurrences left to right (GPT-2's bpe()).
void Tokenizer::bpe_word(std::string_view piece, std::vector<int32_t>& out) const {
  std::vector<int32_t> w(piece.size());
  for (size_t i = 0; i < piece.size(); ++i) w[i] = byte_id_[static_cast<unsigned char>(piece[i])];
  if (w.size() <= kShortWord) {
    while (w.size() > 1) {
      int32_t best_rank = INT32_MAX, best_id = -1, a = 0, b = 0;
      for (size_t i = 0; i + 1 < w.size(); ++i) {
        auto it = merge_rank_.find(pair_key(w[i], w[i + 1]));
        if (it != merge_rank_.end() && it->second.first < best_rank) {
          best_rank = it->second.first, best_id = it->second.second;
          a = w[i], b = w[i + 1];
        }
      }
      if (best_id < 0) break;
      size_t o = 0;
      for (size_t i = 0; i < w.size();) {
        if (i + 1 < w.size() && w[i] == a && w[i + 1] == b) {
          w[o++] = best_id;
          i += 2;
        } else {
          w[o++] = w[i++];
        }
      }
      w.resize(o);
    }
    out.insert(out.end(), w.begin(), w.end());
    return;
  }
  // Long words: a linked list of symbols and a heap of (rank, position). All
  // occurrences of the lowest rank are collected before any is merged, so the
  // result equals the simple loop above, in O(n log n).
  const auto n = int32_t(w.size());
  std::vector<int32_t> next(w.size()), prev(w.size());
  std::vector<bool> alive(w.size(), true);
  for (int32_t i = 0; i < n; ++i) next[size_t(i)] = i + 1, prev[size_t(i)] = i - 1;
  using Entry = std::pair<int32_t, int32_t>;  // (rank, position of the left symbol)
  std::priority_queue<Entry, std::vector<Entry>, std::greater<>> heap;
  auto push = [&](int32_t i) {
    if (i < 0 || i >= n || next[size_t(i)] >= n) return;
    auto it = merge_rank_.find(pair_key(w[size_t(i)], w[size_t(next[size_t(i)])]));
    if (it != merge_rank_.end()) heap.push({it->second.first, i});
  };
  for (int32_t i = 0; i + 1 < n; ++i) push(i);
  std::vector<int32_t> round;
  while (!heap.empty()) {
    const int32_t rank = heap.top().first;
    const auto [a, b] = merges_[size_t(rank)];
    const int32_t m = merge_rank_.at(pair_key(a, b)).second;
    round.clear();
    while (!heap.empty() && heap.top().first == rank) {
      round.push_back(heap.top().second);
      heap.pop();
    }
    std::sort(round.begin(), round.end());
    for (int32_t i : round) {
      if (!alive[size_t(i)]) continue;
      const int32_t j = next[size_t(i)];
      if (j >= n || w[size_t(i)] != a || w[size_t(j)] != b) continue;  // stale entry
      w[size_t(i)] = m;
      alive[size_t(j)] = false;
      next[size_t(i)] = next[size_t(j)];
      if (next[size_t(j)] < n) prev[size_t(next[size_t(j)])] = i;
      push(prev[size_t(i)]);
      push(i);
    }
  }
  for (int32_t i = 0; i < n; i = next[size_t(i)]) out.push_back(w[size_t(i)]);
}

void Tokenizer::encode_append(std::string_view text, std::vector<int32_t>& out) const {
  if (vocab_.empty()) fail("tokenizer: encode called on an empty tokenizer");
  std::vector<std::string_view> pieces;
  pieces.reserve(text.size() / 4 + 1);
  pretokenize(text, pieces);
  auto& words = cache_->words;
  std::vector<int32_t> ids;
  for (auto p : pieces) {
    if (p.size() == 1) {
      out.push_back(byte_id_[static_cast<unsigned char>(p[0])]);
      continue;
    }
    {
      // The lock covers only the cache lookups and inserts, never a merge
      // loop, so concurrent requests do not wait on each other's long words.
      std::lock_guard<std::mutex> lock(cache_->mu);
      auto it = words.find(p);
      if (it != words.end()) {
        out.insert(out.end(), it->second.begin(), it->second.end());
        continue;
      }
    }
    ids.clear();
    bpe_word(p, ids);
    out.insert(out.end(), ids.begin(), ids.end());
    std::lock_guard<std::mutex> lock(cache_->mu);
    if (words.size() >= kCacheMaxWords) words.clear();
    words.emplace(std::string(p), ids);
  }
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 1);
  encode_append(text, out);
  return out;
}

std::vector<int32_t> Tokenizer::encode_with_special(std::string_view text) const {
  return encode_segments({{text, true}});
}

std::vector<int32_t> Tokenizer::encode_segments(
    const std::vector<std::pair<std::string_view, bool>>& segments) const {
  std::vector<int32_t> out;
  // Ordinary text runs across segment boundaries, so a template piece and the
  // content after it tokenize exactly as their concatenation would.
  std::string pending;
  for (const auto& [text, allow_special] : segments) {
    if (!allow_special || specials_.empty()) {
      pending += text;
      continue;
    }
    // next[i]: where special i next occurs at or after pos (npos: never).
    // Each is searched again only once pos has passed it, so a text with many
    // matches costs O(specials x length), not O(matches x specials x length).
    std::vector<size_t> next(specials_.size());
    for (size_t i = 0; i < specials_.size(); ++i) next[i] = text.find(specials_[i].text);
    size_t pos = 0;
    while (pos < text.size()) {
      // Earliest special occurrence; the longest text wins at equal positions.
      size_t best = std::string_view::npos;
      const SpecialToken* hit = nullptr;
      for (size_t i = 0; i < specials_.size(); ++i) {
        if (next[i] != std::string_view::npos && next[i] < pos)
          next[i] = text.find(specials_[i].text, pos);
        const size_t f = next[i];
        if (f < best || (f == best && f != std::string_view::npos &&
                         specials_[i].text.size() > hit->text.size()))
          best = f, hit = &specials_[i];
      }
      if (!hit) break;
      pending += text.substr(pos, best - pos);
      if (!pending.empty()) encode_append(pending, out);
      pending.clear();
      out.push_back(hit->id);
      pos = best + hit->text.size();
    }
    if (pos < text.size()) pending += text.substr(pos);
  }
  if (!pending.empty()) encode_append(pending, out);
  return out;
}

std::string Tokenizer::decode(std::span<const int32_t> ids) const {
  std::string out;
  for (int32_t id : ids) out += token_bytes(id);
  return out;
}

}  // namespace keel::data
