#include "serve/token_mask.h"

#include <algorithm>

namespace keel::serve {

namespace {

// Characters in b when it is plain string content (see JsonTokenMask), else -1.
int32_t plain_chars(const std::string& b) {
  int32_t chars = 0;
  for (size_t i = 0; i < b.size();) {
    const uint8_t c = uint8_t(b[i]);
    if (c == '"' || c == '\\' || c < 0x20) return -1;
    size_t len = 1;
    uint8_t lo = 0x80, hi = 0xBF;
    if (c >= 0x80) {
      if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
      } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
      } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
      } else {
        return -1;
      }
    }
    if (i + len > b.size()) return -1;
    for (size_t k = 1; k < len; ++k) {
      const uint8_t d = uint8_t(b[i + k]);
      if (d < (k == 1 ? lo : 0x80) || d > (k == 1 ? hi : 0xBF)) return -1;
    }
    i += len;
    ++chars;
  }
  return chars;
}

}  // namespace

void JsonTokenMask::Trie::build(const std::vector<std::string>& bytes, std::vector<int32_t> ids) {
  std::sort(ids.begin(), ids.end(),
            [&](int32_t a, int32_t b) { return bytes[size_t(a)] < bytes[size_t(b)]; });
  nodes.clear();
  edges.clear();
  tokens.clear();
  build_range(bytes, ids, 0, ids.size(), 0);
}

uint32_t JsonTokenMask::Trie::build_range(const std::vector<std::string>& bytes,
                                          const std::vector<int32_t>& ids, size_t lo, size_t hi,
                                          size_t depth) {
  const uint32_t me = uint32_t(nodes.size());
  nodes.emplace_back();
  // Sorted: the ids whose bytes end here come first.
  size_t i = lo;
  nodes[me].first_token = uint32_t(tokens.size());
  while (i < hi && bytes[size_t(ids[i])].size() == depth) tokens.push_back(ids[i++]);
  nodes[me].n_tokens = uint32_t(tokens.size()) - nodes[me].first_token;
  std::vector<std::pair<uint8_t, uint32_t>> mine;
  while (i < hi) {
    const uint8_t c = uint8_t(bytes[size_t(ids[i])][depth]);
    size_t j = i;
    while (j < hi && uint8_t(bytes[size_t(ids[j])][depth]) == c) ++j;
    mine.emplace_back(c, build_range(bytes, ids, i, j, depth + 1));
    i = j;
  }
  nodes[me].first_edge = uint32_t(edges.size());
  nodes[me].n_edges = uint32_t(mine.size());
  edges.insert(edges.end(), mine.begin(), mine.end());
  return me;
}

JsonTokenMask::JsonTokenMask(const std::vector<std::string>& token_bytes)
    : vocab_(token_bytes.size()) {
  std::vector<int32_t> all, rest;
  size_t longest = 0;
  for (size_t id = 0; id < token_bytes.size(); ++id) {
    const std::string& b = token_bytes[id];
    if (b.empty()) continue;
    all.push_back(int32_t(id));
    longest = std::max(longest, b.size());
    if (const int32_t n = plain_chars(b); n > 0)
      plain_.emplace_back(int32_t(id), n);
    else
      rest.push_back(int32_t(id));
  }
  full_.build(token_bytes, std::move(all));
  rest_.build(token_bytes, std::move(rest));
  states_.resize(longest + 1);
}

void JsonTokenMask::walk(const Trie& t, uint32_t node, size_t depth, const JsonGrammar& g,
                         std::vector<uint8_t>& allowed) {
  const Trie::Node& n = t.nodes[node];
  for (uint32_t e = n.first_edge; e < n.first_edge + n.n_edges; ++e) {
    const auto [c, child] = t.edges[e];
    if (!g.step(states_[depth], c, states_[depth + 1])) continue;
    const Trie::Node& cn = t.nodes[child];
    for (uint32_t k = cn.first_token; k < cn.first_token + cn.n_tokens; ++k)
      allowed[size_t(t.tokens[k])] = 1;
    walk(t, child, depth + 1, g, allowed);
  }
}

void JsonTokenMask::compute(const JsonGrammar& g, const JsonGrammar::State& s,
                            std::vector<uint8_t>& allowed) {
  allowed.assign(vocab_, 0);
  states_[0] = s;
  const int64_t room = g.plain_string_room(s);
  if (room == -2) return walk(full_, 0, 0, g, allowed);
  for (const auto& [id, chars] : plain_)
    if (room < 0 || chars <= room) allowed[size_t(id)] = 1;
  walk(rest_, 0, 0, g, allowed);
}

}  // namespace keel::serve
