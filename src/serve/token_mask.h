// Which vocabulary entries may come next under a JSON grammar: a trie of the
// tokens' byte strings walked once per step with the grammar state, so a
// shared prefix is checked once for every token under it and a refused byte
// prunes its whole subtree. Inside a string, tokens of plain characters are
// allowed without a walk (only their character count matters).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "serve/json_grammar.h"

namespace keel::serve {

class JsonTokenMask {
 public:
  // token_bytes[id]: the bytes token id stands for; "" for ids never allowed
  // under a grammar (special tokens, padding ids past the tokenizer).
  explicit JsonTokenMask(const std::vector<std::string>& token_bytes);

  // allowed[id] = 1 when every byte of id keeps s a prefix of a matching
  // text (size: token_bytes.size()). Not thread-safe: it keeps scratch.
  void compute(const JsonGrammar& g, const JsonGrammar::State& s, std::vector<uint8_t>& allowed);

  int64_t trie_nodes() const { return int64_t(full_.nodes.size()); }

 private:
  struct Trie {
    struct Node {
      uint32_t first_edge = 0, n_edges = 0, first_token = 0, n_tokens = 0;
    };
    std::vector<Node> nodes;                          // 0: the root (empty prefix)
    std::vector<std::pair<uint8_t, uint32_t>> edges;  // (byte, child)
    std::vector<int32_t> tokens;                      // ids ending at a node
    void build(const std::vector<std::string>& bytes, std::vector<int32_t> ids);
    uint32_t build_range(const std::vector<std::string>& bytes, const std::vector<int32_t>& ids,
                         size_t lo, size_t hi, size_t depth);
  };
  void walk(const Trie& t, uint32_t node, size_t depth, const JsonGrammar& g,
            std::vector<uint8_t>& allowed);

  size_t vocab_;
  Trie full_;
  // Tokens that are plain string characters (no quote, backslash or control
  // byte; whole UTF-8 sequences), with their character counts, and a trie of
  // the rest for use inside strings.
  std::vector<std::pair<int32_t, int32_t>> plain_;
  Trie rest_;
  std::vector<JsonGrammar::State> states_;  // per trie depth
};

}  // namespace keel::serve
