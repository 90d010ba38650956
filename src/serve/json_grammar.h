// An incremental recognizer of JSON texts matching a compiled schema
// (serve/json_schema.h): fed one byte at a time, it says whether the bytes so
// far are a prefix of some matching JSON text and whether the text is
// complete. It is a pushdown automaton (one frame per open value) run on a
// set of stacks, because anyOf can leave several readings of one prefix.
// States are plain values, so the token mask copies them down a token trie.
#pragma once
#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

#include "serve/json_schema.h"

namespace keel::serve {

class JsonGrammar {
 public:
  // Limits that keep every output finite and short whatever the model
  // prefers: values nest at most kMaxDepth deep; between tokens at most
  // kMaxSpaces whitespace bytes (a small model fills every gap it is given:
  // a tiny one tried here spent its whole budget on runs of 16 spaces); numbers
  // have at most 16 integer and 16 fraction digits and a 2-digit exponent, so
  // every number is a finite double (llama.cpp's JSON grammars bound digits
  // likewise; a 3-digit exponent let a model write 1e999, which parses as
  // infinity).
  static constexpr int kMaxDepth = 32, kMaxSpaces = 1, kMaxDigits = 16, kMaxExpDigits = 2;

  struct Frame {
    int32_t node = -1;  // -1: the document (bottom of every stack)
    uint8_t phase = 0;
    uint8_t esc = 0;                   // string: 0 plain, 1 after '\', 2..5 \u digits seen + 2
    uint8_t utf8 = 0;                  // string: UTF-8 continuation bytes still due
    uint8_t u8lo = 0x80, u8hi = 0xBF;  // string: range of the next continuation byte
    int32_t count = 0;   // array items, string chars, number digits, document: spaces in a row
    int32_t pos = 0;     // literal or property-name bytes matched
    int32_t key = -1;    // object: the property whose value comes next
    uint64_t alive = 0;  // literal or property-name candidates still matching
    uint64_t seen = 0;   // object: properties written
    bool operator==(const Frame&) const = default;
  };
  using Stack = std::vector<Frame>;

  // The readings of the bytes so far; `n` of `alts` are live (the rest keep
  // their capacity for reuse, so stepping in a loop does not allocate).
  struct State {
    std::vector<Stack> alts;
    size_t n = 0;
  };

  explicit JsonGrammar(std::shared_ptr<const JsonSchemaGraph> graph);

  State initial() const;
  // out = in after byte c; false (out then empty) when no reading takes c.
  bool step(const State& in, uint8_t c, State& out) const;
  // Steps through bytes in place; false when a byte was refused (s unchanged).
  bool advance(State& s, std::string_view bytes) const;
  // Some reading is a complete value (a number may still grow).
  bool accepting(const State& s) const;
  // Every reading is a complete value to which no byte can be added.
  bool finished(const State& s) const;

  // String content where any plain character is allowed: the single reading
  // is inside a string (or an object key of a free-keys object) after a
  // complete character, outside any escape. Returns the characters still
  // allowed (-1: no limit), or -2 when the state is not such a place.
  int64_t plain_string_room(const State& s) const;

  const JsonSchemaGraph& graph() const { return *graph_; }

 private:
  enum class Step { Invalid, Consumed, Closed, Pass, Push };
  Step step_frame(Frame& f, uint8_t c, int32_t& child) const;
  bool feed(Stack& s, uint8_t c, State& out, int depth) const;
  bool start_value(Stack& s, int32_t node, uint8_t c, State& out, int depth) const;
  void emit(const Stack& s, State& out) const;
  // The child of `parent` (the document, an object or an array) ended.
  void value_done(Frame& parent) const;
  bool can_end(const Frame& f) const;

  std::shared_ptr<const JsonSchemaGraph> graph_;
};

}  // namespace keel::serve
