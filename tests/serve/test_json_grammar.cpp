// The JSON grammar of response_format: schemas compile or are refused with
// the keyword's path; whole texts are accepted or refused byte by byte; the
// token mask allows exactly the tokens whose bytes the grammar takes (checked
// against stepping every token on its own).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "serve/json_grammar.h"
#include "serve/json_schema.h"
#include "serve/token_mask.h"

using namespace keel::serve;
using nlohmann::json;

namespace {

// 1: a complete matching text; 0: a valid prefix, not complete; -1: refused.
int verdict(const JsonGrammar& g, const std::string& text) {
  JsonGrammar::State s = g.initial();
  if (!g.advance(s, text)) return -1;
  return g.accepting(s) ? 1 : 0;
}

JsonGrammar grammar(const char* schema) {
  return JsonGrammar(compile_json_schema(json::parse(schema)));
}

TEST(JsonGrammar, AnyObject) {
  const JsonGrammar g(json_object_graph());
  EXPECT_EQ(verdict(g, R"({})"), 1);
  EXPECT_EQ(verdict(g, R"({"a": [1, -2.5e+3, true, null, "x\u00e9\n"], "b": {"c": {}}})"), 1);
  EXPECT_EQ(verdict(g, R"( { "a" : 1 } )"), -1);  // nothing after the value
  EXPECT_EQ(verdict(g, R"( { "a" : 1 })"), 1);
  EXPECT_EQ(verdict(g, "{\n\"a\":\n1}"), 1);
  EXPECT_EQ(verdict(g, R"({"a": 1)"), 0);
  EXPECT_EQ(verdict(g, R"({"a": 01})"), -1);
  EXPECT_EQ(verdict(g, R"({"a": 1.)"), 0);
  EXPECT_EQ(verdict(g, R"({"a": 1.})"), -1);
  EXPECT_EQ(verdict(g, R"({"a": tru})"), -1);
  EXPECT_EQ(verdict(g, R"({"a": -0.5E-12})"), 1);
  EXPECT_EQ(verdict(g, R"({"a": 1e999})"), -1);  // would parse as infinity
  EXPECT_EQ(verdict(g, R"([1])"), -1);           // json_object: an object
  EXPECT_EQ(verdict(g, "{\"a\": \"\x01\"}"), -1);
  EXPECT_EQ(verdict(g, "{\"a\": \"\xc3\xa9\"}"), 1);
  EXPECT_EQ(verdict(g, "{\"a\": \"\xc3\"}"), -1);          // a cut UTF-8 sequence
  EXPECT_EQ(verdict(g, "{\"a\": \"\xed\xa0\x80\"}"), -1);  // a surrogate
  EXPECT_EQ(verdict(g, R"({"a": "\q"})"), -1);
  EXPECT_EQ(verdict(g, R"({"a" 1})"), -1);
  // Whitespace between tokens is one byte at most, so a model cannot pad.
  const auto around = [](const char* a, size_t n, char c, const char* b) {
    return std::string(a).append(n, c).append(b);
  };
  EXPECT_EQ(verdict(g, around("{", 1, ' ', "}")), 1);
  EXPECT_EQ(verdict(g, around("{", 2, ' ', "}")), -1);
  EXPECT_EQ(verdict(g, around("{\"a\":", 2, '\n', "1}")), -1);
  EXPECT_EQ(verdict(g, around("{\"a\": \"", 40, ' ', "\"}")), 1);  // not in strings
  EXPECT_EQ(verdict(g, around("{\"a\": ", 16, '9', "}")), 1);
  EXPECT_EQ(verdict(g, around("{\"a\": ", 17, '9', "}")), -1);
}

TEST(JsonGrammar, ObjectProperties) {
  const JsonGrammar g = grammar(R"({"type": "object", "properties": {
      "name": {"type": "string", "maxLength": 3},
      "age": {"type": "integer"},
      "tags": {"type": "array", "items": {"enum": ["a", "bc", 7]}, "minItems": 1, "maxItems": 2},
      "ok": {"type": ["boolean", "null"]}},
    "required": ["name", "age"], "additionalProperties": false})");
  EXPECT_EQ(verdict(g, R"({"name": "abc", "age": -12})"), 1);
  EXPECT_EQ(verdict(g, R"({"age": 3, "name": ""})"), 1);       // any order
  EXPECT_EQ(verdict(g, R"({"name": "abcd", "age": 1})"), -1);  // maxLength
  EXPECT_EQ(verdict(g, R"({"name": "a\nb", "age": 1})"), 1);   // an escape is one char
  EXPECT_EQ(verdict(g, R"({"name": "a"})"), -1);               // age is required
  EXPECT_EQ(verdict(g, R"({"name": "a", "age": 1.5})"), -1);   // integer
  EXPECT_EQ(verdict(g, R"({"name": "a", "age": 1, "x": 1})"), -1);
  EXPECT_EQ(verdict(g, R"({"name": "a", "name": "b"})"), -1);  // no key twice
  EXPECT_EQ(verdict(g, R"({"name": "a", "age": 1, "tags": ["bc", 7]})"), 1);
  EXPECT_EQ(verdict(g, R"({"name": "a", "age": 1, "tags": []})"), -1);               // minItems
  EXPECT_EQ(verdict(g, R"({"name": "a", "age": 1, "tags": ["a", "a", "a"]})"), -1);  // maxItems
  EXPECT_EQ(verdict(g, R"({"name": "a", "age": 1, "tags": ["b"]})"), -1);
  EXPECT_EQ(verdict(g, R"({"name": "a", "age": 1, "ok": null})"), 1);
  EXPECT_EQ(verdict(g, R"({"name": "a", "age": 1, "ok": false})"), 1);
  EXPECT_EQ(verdict(g, R"({"name": "a", "age": 1, "ok": 0})"), -1);
  // Incremental: a prefix is 0 until the closing brace completes it.
  JsonGrammar::State s = g.initial();
  const std::string text = R"({"name":"ab","age":7})";
  for (size_t i = 0; i < text.size(); ++i) {
    ASSERT_TRUE(g.advance(s, text.substr(i, 1))) << i;
    EXPECT_EQ(g.finished(s), i + 1 == text.size()) << i;
  }
}

TEST(JsonGrammar, AnyOfRefsAndLiterals) {
  const JsonGrammar g = grammar(R"({
    "$defs": {"node": {"type": "object", "properties": {
        "v": {"type": "number"}, "next": {"anyOf": [{"$ref": "#/$defs/node"}, {"type": "null"}]}},
      "required": ["v", "next"], "additionalProperties": false}},
    "$ref": "#/$defs/node"})");
  EXPECT_EQ(verdict(g, R"({"v": 1, "next": {"v": 2e5, "next": null}})"), 1);
  EXPECT_EQ(verdict(g, R"({"v": 1, "next": {"v": 2}})"), -1);
  const JsonGrammar e = grammar(R"({"enum": [1, 12, "x", {"k": [true]}]})");
  EXPECT_EQ(verdict(e, "1"), 1);
  EXPECT_EQ(verdict(e, "12"), 1);
  EXPECT_EQ(verdict(e, "13"), -1);
  EXPECT_EQ(verdict(e, R"({"k":[true]})"), 1);
  const JsonGrammar c = grammar(R"({"const": "yes"})");
  EXPECT_EQ(verdict(c, R"("yes")"), 1);
  EXPECT_EQ(verdict(c, R"("no")"), -1);
  const JsonGrammar u =
      grammar(R"({"anyOf": [{"type": "object", "properties": {"a": {"type": "string"}},
    "required": ["a"]}, {"type": "object", "properties": {"b": {"type": "integer"}}, "required": ["b"]}]})");
  EXPECT_EQ(verdict(u, R"({"a": "x"})"), 1);
  EXPECT_EQ(verdict(u, R"({"b": 3})"), 1);
  EXPECT_EQ(verdict(u, R"({"b": "x"})"), -1);
}

TEST(JsonSchema, UnsupportedKeywordsNameTheirPath) {
  auto path_of = [](const char* schema) -> std::string {
    try {
      compile_json_schema(json::parse(schema));
    } catch (const SchemaError& e) {
      return e.path();
    }
    return "<compiled>";
  };
  EXPECT_EQ(
      path_of(R"({"type": "object", "properties": {"s": {"type": "string", "pattern": "a+"}}})"),
      "schema.properties.s.pattern");
  EXPECT_EQ(path_of(R"({"type": "array", "items": {"type": "number", "minimum": 0}})"),
            "schema.items.minimum");
  EXPECT_EQ(path_of(R"({"oneOf": [{"type": "string"}]})"), "schema.oneOf");
  EXPECT_EQ(path_of(R"({"type": "object", "required": ["x"], "properties": {}})"),
            "schema.required");
  EXPECT_EQ(path_of(R"({"$ref": "#/$defs/missing"})"), "schema.$ref");
  EXPECT_EQ(path_of(R"({"type": "strin"})"), "schema.type");
  EXPECT_EQ(path_of(R"({"type": "string", "title": "t", "description": "d"})"), "<compiled>");
}

TEST(JsonTokenMask, AllowsExactlyTheTokensTheGrammarTakes) {
  std::vector<std::string> vocab;
  for (int b = 0; b < 256; ++b) vocab.push_back(std::string(1, char(b)));
  for (const char* t : {"{\"", "\":",   "\"}",  "name",  "na",       " \"",  "\"name\"", "\": \"",
                        "12",  "3.",    "true", "tr",    "}\n",      ", \"", "\xc3",     "\xc3\xa9",
                        "é\"", "ab\"}", "\\n",  "\\u00", "\"age\":", "[\"",  "\"]"})
    vocab.push_back(t);
  vocab.push_back("");  // a special token: never allowed
  JsonTokenMask mask(vocab);
  const JsonGrammar g = grammar(R"({"type": "object", "properties": {
      "name": {"type": "string", "maxLength": 4}, "age": {"type": "integer"},
      "tags": {"type": "array", "items": {"type": "string"}}},
    "required": ["name"], "additionalProperties": false})");
  const std::vector<std::string> prefixes = {"",
                                             "{",
                                             "{\"",
                                             "{\"na",
                                             "{\"name\":",
                                             "{\"name\": \"",
                                             "{\"name\": \"ab",
                                             "{\"name\": \"abcd",
                                             "{\"name\": \"a\\",
                                             "{\"name\": \"\xc3",
                                             "{\"name\": \"a\", \"age\": 1",
                                             "{\"name\": \"a\"}",
                                             "{\"tags\": [\"x"};
  std::vector<uint8_t> allowed;
  for (const std::string& p : prefixes) {
    JsonGrammar::State s = g.initial();
    ASSERT_TRUE(g.advance(s, p)) << p;
    mask.compute(g, s, allowed);
    for (size_t id = 0; id < vocab.size(); ++id) {
      JsonGrammar::State t = s;
      const bool want = !vocab[id].empty() && g.advance(t, vocab[id]);
      EXPECT_EQ(bool(allowed[id]), want) << "prefix " << p << ", token " << vocab[id];
    }
  }
}

}  // namespace
