#include "serve/json_grammar.h"

#include <algorithm>
#include <utility>

namespace keel::serve {

namespace {

using Kind = SchemaNode::Kind;
using Frame = JsonGrammar::Frame;

enum DocPhase : uint8_t { kDocStart, kDocInValue, kDocDone };
enum ObjPhase : uint8_t {
  kObjOpen,
  kObjFirst,
  kObjKey,
  kObjColon,
  kObjValue,
  kObjInValue,
  kObjAfter,
  kObjNext
};
enum ArrPhase : uint8_t { kArrOpen, kArrFirst, kArrInValue, kArrAfter, kArrNext };
enum StrPhase : uint8_t { kStrOpen, kStrIn };
enum NumPhase : uint8_t {
  kNumStart,
  kNumMinus,
  kNumZero,
  kNumInt,
  kNumFrac0,
  kNumFrac,
  kNumExp0,
  kNumExpSign,
  kNumExp
};

bool is_space(uint8_t c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}
bool is_digit(uint8_t c) {
  return c >= '0' && c <= '9';
}
bool is_hex(uint8_t c) {
  return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

// Candidates of `alive` whose byte at pos is c (0: none).
uint64_t match_byte(const std::vector<std::string>& cands, uint64_t alive, int32_t pos, uint8_t c) {
  uint64_t m = 0;
  for (uint64_t a = alive; a; a &= a - 1) {
    const int i = __builtin_ctzll(a);
    const std::string& t = cands[size_t(i)];
    if (size_t(pos) < t.size() && uint8_t(t[size_t(pos)]) == c) m |= uint64_t(1) << i;
  }
  return m;
}

// The candidate of `alive` that is exactly pos bytes long, or -1.
int complete_one(const std::vector<std::string>& cands, uint64_t alive, int32_t pos) {
  for (uint64_t a = alive; a; a &= a - 1) {
    const int i = __builtin_ctzll(a);
    if (cands[size_t(i)].size() == size_t(pos)) return i;
  }
  return -1;
}

bool any_longer(const std::vector<std::string>& cands, uint64_t alive, int32_t pos) {
  for (uint64_t a = alive; a; a &= a - 1)
    if (cands[size_t(__builtin_ctzll(a))].size() > size_t(pos)) return true;
  return false;
}

uint64_t low_bits(size_t n) {
  return n >= 64 ? ~uint64_t(0) : (uint64_t(1) << n) - 1;
}

// One byte of string content after the opening quote: -1 refused, 0 taken,
// 1 the closing quote. Lengths count characters; an escape is one.
int string_byte(Frame& f, uint8_t c, int64_t min_len, int64_t max_len) {
  if (f.utf8) {
    if (c < f.u8lo || c > f.u8hi) return -1;
    --f.utf8;
    f.u8lo = 0x80;
    f.u8hi = 0xBF;
    return 0;
  }
  if (f.esc == 1) {
    if (c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f' || c == 'n' || c == 'r' ||
        c == 't') {
      f.esc = 0;
      ++f.count;
      return 0;
    }
    if (c != 'u') return -1;
    f.esc = 2;
    return 0;
  }
  if (f.esc >= 2) {
    if (!is_hex(c)) return -1;
    if (++f.esc == 6) {
      f.esc = 0;
      ++f.count;
    }
    return 0;
  }
  if (c == '"') return f.count >= min_len ? 1 : -1;
  if (max_len >= 0 && f.count >= max_len) return -1;
  if (c == '\\') {
    f.esc = 1;
    return 0;
  }
  if (c < 0x20) return -1;
  if (c >= 0x80) {
    // Well-formed UTF-8 only (no overlong forms, surrogates or code points
    // above U+10FFFF): the second byte's range depends on the first.
    if (c >= 0xC2 && c <= 0xDF) {
      f.utf8 = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
      f.utf8 = 2;
      if (c == 0xE0) f.u8lo = 0xA0;
      if (c == 0xED) f.u8hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      f.utf8 = 3;
      if (c == 0xF0) f.u8lo = 0x90;
      if (c == 0xF4) f.u8hi = 0x8F;
    } else {
      return -1;
    }
  }
  ++f.count;
  return 0;
}

}  // namespace

JsonGrammar::JsonGrammar(std::shared_ptr<const JsonSchemaGraph> graph) : graph_(std::move(graph)) {}

JsonGrammar::State JsonGrammar::initial() const {
  State s;
  s.alts.push_back(Stack{Frame{}});
  s.n = 1;
  return s;
}

bool JsonGrammar::can_end(const Frame& f) const {
  if (f.node < 0) return f.phase == kDocDone;
  const SchemaNode& n = graph_->nodes[size_t(f.node)];
  switch (n.kind) {
    case Kind::Literals:
      return complete_one(n.literals, f.alive, f.pos) >= 0;
    case Kind::Number:
    case Kind::Integer:
      return f.phase == kNumZero || f.phase == kNumInt || f.phase == kNumFrac || f.phase == kNumExp;
    default:
      return false;
  }
}

JsonGrammar::Step JsonGrammar::step_frame(Frame& f, uint8_t c, int32_t& child) const {
  const bool space = is_space(c);
  if (f.node < 0) {
    if (f.phase != kDocStart) return Step::Invalid;
    if (space) return Step::Consumed;
    child = graph_->root;
    f.phase = kDocInValue;
    return Step::Push;
  }
  const SchemaNode& n = graph_->nodes[size_t(f.node)];
  switch (n.kind) {
    case Kind::Object: {
      const uint64_t declared = low_bits(n.keys.size());
      auto begin_key = [&] {
        f.phase = kObjKey;
        if (n.free_keys) {
          f.esc = f.utf8 = 0;
          f.count = 0;
          return Step::Consumed;
        }
        f.alive = declared & ~f.seen;
        f.pos = 1;  // every key's text starts with the quote just read
        return f.alive ? Step::Consumed : Step::Invalid;
      };
      switch (f.phase) {
        case kObjOpen:
          if (c != '{') return Step::Invalid;
          f.phase = kObjFirst;
          return Step::Consumed;
        case kObjFirst:
          if (space) return Step::Consumed;
          if (c == '}') return n.required == 0 ? Step::Closed : Step::Invalid;
          return c == '"' ? begin_key() : Step::Invalid;
        case kObjKey: {
          if (n.free_keys) {
            const int r = string_byte(f, c, 0, -1);
            if (r < 0) return Step::Invalid;
            if (r == 1) f.phase = kObjColon;
            return Step::Consumed;
          }
          const uint64_t m = match_byte(n.keys, f.alive, f.pos, c);
          if (!m) return Step::Invalid;
          f.alive = m;
          ++f.pos;
          if (const int k = complete_one(n.keys, m, f.pos); k >= 0) {
            f.key = k;
            f.seen |= uint64_t(1) << k;
            f.phase = kObjColon;
          }
          return Step::Consumed;
        }
        case kObjColon:
          if (space) return Step::Consumed;
          if (c != ':') return Step::Invalid;
          f.phase = kObjValue;
          return Step::Consumed;
        case kObjValue:
          if (space) return Step::Consumed;
          child = n.free_keys ? n.free_value : n.values[size_t(f.key)];
          f.phase = kObjInValue;
          return Step::Push;
        case kObjAfter:
          if (space) return Step::Consumed;
          if (c == ',' && (n.free_keys || (declared & ~f.seen))) {
            f.phase = kObjNext;
            return Step::Consumed;
          }
          if (c == '}') return (n.required & ~f.seen) == 0 ? Step::Closed : Step::Invalid;
          return Step::Invalid;
        case kObjNext:
          if (space) return Step::Consumed;
          return c == '"' ? begin_key() : Step::Invalid;
        default:
          return Step::Invalid;
      }
    }
    case Kind::Array:
      switch (f.phase) {
        case kArrOpen:
          if (c != '[') return Step::Invalid;
          f.phase = kArrFirst;
          return Step::Consumed;
        case kArrFirst:
          if (space) return Step::Consumed;
          if (c == ']') return n.min_items == 0 ? Step::Closed : Step::Invalid;
          if (n.max_items == 0) return Step::Invalid;
          child = n.items;
          f.phase = kArrInValue;
          return Step::Push;
        case kArrAfter:
          if (space) return Step::Consumed;
          if (c == ',' && (n.max_items < 0 || f.count < n.max_items)) {
            f.phase = kArrNext;
            return Step::Consumed;
          }
          if (c == ']') return f.count >= n.min_items ? Step::Closed : Step::Invalid;
          return Step::Invalid;
        case kArrNext:
          if (space) return Step::Consumed;
          child = n.items;
          f.phase = kArrInValue;
          return Step::Push;
        default:
          return Step::Invalid;
      }
    case Kind::String: {
      if (f.phase == kStrOpen) {
        if (c != '"') return Step::Invalid;
        f.phase = kStrIn;
        return Step::Consumed;
      }
      const int r = string_byte(f, c, n.min_length, n.max_length);
      return r < 0 ? Step::Invalid : r == 1 ? Step::Closed : Step::Consumed;
    }
    case Kind::Number:
    case Kind::Integer: {
      const bool real = n.kind == Kind::Number;
      auto digit_to = [&](uint8_t phase) {
        f.phase = phase;
        f.count = 1;
        return Step::Consumed;
      };
      switch (f.phase) {
        case kNumStart:
          if (c == '-') {
            f.phase = kNumMinus;
            return Step::Consumed;
          }
          [[fallthrough]];
        case kNumMinus:
          if (c == '0') return digit_to(kNumZero);
          return is_digit(c) ? digit_to(kNumInt) : Step::Invalid;
        case kNumZero:
        case kNumInt:
          if (f.phase == kNumInt && is_digit(c) && f.count < kMaxDigits) {
            ++f.count;
            return Step::Consumed;
          }
          if (real && c == '.') {
            f.phase = kNumFrac0;
            return Step::Consumed;
          }
          if (real && (c == 'e' || c == 'E')) {
            f.phase = kNumExp0;
            return Step::Consumed;
          }
          return Step::Pass;
        case kNumFrac0:
          return is_digit(c) ? digit_to(kNumFrac) : Step::Invalid;
        case kNumFrac:
          if (is_digit(c) && f.count < kMaxDigits) {
            ++f.count;
            return Step::Consumed;
          }
          if (c == 'e' || c == 'E') {
            f.phase = kNumExp0;
            return Step::Consumed;
          }
          return Step::Pass;
        case kNumExp0:
          if (c == '+' || c == '-') {
            f.phase = kNumExpSign;
            return Step::Consumed;
          }
          [[fallthrough]];
        case kNumExpSign:
          return is_digit(c) ? digit_to(kNumExp) : Step::Invalid;
        case kNumExp:
          if (is_digit(c) && f.count < kMaxExpDigits) {
            ++f.count;
            return Step::Consumed;
          }
          return Step::Pass;
        default:
          return Step::Invalid;
      }
    }
    case Kind::Literals: {
      const uint64_t m = match_byte(n.literals, f.alive, f.pos, c);
      if (!m) return complete_one(n.literals, f.alive, f.pos) >= 0 ? Step::Pass : Step::Invalid;
      f.alive = m;
      ++f.pos;
      return any_longer(n.literals, m, f.pos) ? Step::Consumed : Step::Closed;
    }
    case Kind::Any:
    case Kind::AnyOf:
      break;  // never a frame: start_value resolves them
  }
  return Step::Invalid;
}

void JsonGrammar::value_done(Frame& parent) const {
  if (parent.node < 0) {
    parent.phase = kDocDone;
  } else if (graph_->nodes[size_t(parent.node)].kind == Kind::Object) {
    parent.phase = kObjAfter;
  } else {
    parent.phase = kArrAfter;
    ++parent.count;
  }
}

void JsonGrammar::emit(const Stack& s, State& out) const {
  for (size_t i = 0; i < out.n; ++i)
    if (out.alts[i] == s) return;
  // Readings beyond a handful come only from anyOf branches that agree on a
  // long prefix; dropping extras narrows the choice but never admits an
  // invalid text.
  if (out.n >= 16) return;
  if (out.n == out.alts.size()) out.alts.emplace_back();
  out.alts[out.n++] = s;
}

bool JsonGrammar::start_value(Stack& s, int32_t node, uint8_t c, State& out, int depth) const {
  if (depth > 64) return false;  // a $ref cycle that never reaches a value
  const SchemaNode& n = graph_->nodes[size_t(node)];
  if (n.kind == Kind::AnyOf) {
    bool any = false;
    for (size_t i = 0; i < n.branches.size(); ++i) {
      if (i + 1 == n.branches.size())
        return start_value(s, n.branches[i], c, out, depth + 1) || any;
      Stack copy = s;
      any = start_value(copy, n.branches[i], c, out, depth + 1) || any;
    }
    return any;
  }
  if (n.kind == Kind::Any) {
    int32_t concrete = -1;
    if (c == '{') concrete = JsonSchemaGraph::kAnyObject;
    if (c == '[') concrete = JsonSchemaGraph::kAnyArray;
    if (c == '"') concrete = JsonSchemaGraph::kAnyString;
    if (c == '-' || is_digit(c)) concrete = JsonSchemaGraph::kAnyNumber;
    if (c == 't' || c == 'f' || c == 'n') concrete = JsonSchemaGraph::kAnyLiteral;
    return concrete >= 0 && start_value(s, concrete, c, out, depth + 1);
  }
  if (int(s.size()) > kMaxDepth) return false;
  Frame f;
  f.node = node;
  if (n.kind == Kind::Literals) f.alive = low_bits(n.literals.size());
  s.push_back(f);
  return feed(s, c, out, depth + 1);
}

bool JsonGrammar::feed(Stack& s, uint8_t c, State& out, int depth) const {
  int32_t child = -1;
  Frame& top = s.back();
  const bool top_structural = top.node < 0 || [&] {
    const Kind k = graph_->nodes[size_t(top.node)].kind;
    return k == Kind::Object ? top.phase != kObjKey : k == Kind::Array;
  }();
  switch (step_frame(top, c, child)) {
    case Step::Invalid:
      return false;
    case Step::Consumed:
      // Whitespace between tokens counts toward the run limit; any other
      // byte (string content included) ends the run.
      if (is_space(c) && top_structural) {
        if (s[0].count >= kMaxSpaces) return false;
        ++s[0].count;
      } else {
        s[0].count = 0;
      }
      emit(s, out);
      return true;
    case Step::Closed:
      s.pop_back();
      value_done(s.back());
      s[0].count = 0;
      emit(s, out);
      return true;
    case Step::Pass:
      s.pop_back();
      value_done(s.back());
      return feed(s, c, out, depth + 1);
    case Step::Push:
      s[0].count = 0;
      return start_value(s, child, c, out, depth);
  }
  return false;
}

bool JsonGrammar::step(const State& in, uint8_t c, State& out) const {
  out.n = 0;
  thread_local Stack scratch;
  for (size_t i = 0; i < in.n; ++i) {
    scratch = in.alts[i];
    feed(scratch, c, out, 0);
  }
  return out.n > 0;
}

bool JsonGrammar::advance(State& s, std::string_view bytes) const {
  State a = s, b;
  for (const char ch : bytes) {
    if (!step(a, uint8_t(ch), b)) return false;
    std::swap(a, b);
  }
  s = std::move(a);
  return true;
}

bool JsonGrammar::accepting(const State& s) const {
  for (size_t i = 0; i < s.n; ++i) {
    const Stack& st = s.alts[i];
    if ((st.size() == 1 && can_end(st[0])) || (st.size() == 2 && can_end(st[1]))) return true;
  }
  return false;
}

bool JsonGrammar::finished(const State& s) const {
  for (size_t i = 0; i < s.n; ++i) {
    const Stack& st = s.alts[i];
    if (!(st.size() == 1 && st[0].phase == kDocDone)) return false;
  }
  return s.n > 0;
}

int64_t JsonGrammar::plain_string_room(const State& s) const {
  if (s.n != 1) return -2;
  const Frame& f = s.alts[0].back();
  if (f.node < 0 || f.esc != 0 || f.utf8 != 0) return -2;
  const SchemaNode& n = graph_->nodes[size_t(f.node)];
  if (n.kind == Kind::String && f.phase == kStrIn)
    return n.max_length < 0 ? -1 : std::max<int64_t>(0, n.max_length - f.count);
  if (n.kind == Kind::Object && n.free_keys && f.phase == kObjKey) return -1;
  return -2;
}

}  // namespace keel::serve
