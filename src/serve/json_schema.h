// The JSON Schema subset of structured output (response_format json_schema),
// compiled into a graph of value shapes that the JSON grammar walks byte by
// byte (serve/json_grammar.h). A keyword outside the subset is refused with
// its path, never ignored: an ignored constraint would let the server claim
// output that does not match the schema.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace keel::serve {

// A schema keyword keel cannot enforce, or a malformed value of one.
// `path` is where it sits, e.g. "schema.properties.name.pattern".
class SchemaError : public Error {
 public:
  SchemaError(std::string path, const std::string& msg) : Error(msg), path_(std::move(path)) {}
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

struct SchemaNode {
  enum class Kind : uint8_t { Any, Object, Array, String, Number, Integer, Literals, AnyOf };
  Kind kind = Kind::Any;
  // Object with properties: keys[i] is property i's name as JSON text,
  // quotes included ("\"name\""); values[i] its node; bit i of `required`.
  // Without properties (free_keys) any key is allowed, each value being
  // `free_value`. Keys outside `properties` are never generated (valid
  // whatever additionalProperties says: they are allowed, not required).
  std::vector<std::string> keys;
  std::vector<int32_t> values;
  uint64_t required = 0;
  bool free_keys = false;
  int32_t free_value = -1;
  // Array
  int32_t items = -1;
  int64_t min_items = 0, max_items = -1;  // -1: no limit
  // String: lengths in characters (an escape or a UTF-8 sequence is one).
  int64_t min_length = 0, max_length = -1;
  // Literals (enum, const, boolean, null): compact JSON texts, at most 64.
  std::vector<std::string> literals;
  // AnyOf (also a list of types): the value matches one of these nodes.
  std::vector<int32_t> branches;
};

// Node 0 is Any: any JSON value; a json_object response is rooted at node 1
// (any object).
struct JsonSchemaGraph {
  std::vector<SchemaNode> nodes;
  int32_t root = 0;
  static constexpr int32_t kAny = 0, kAnyObject = 1, kAnyArray = 2, kAnyString = 3, kAnyNumber = 4,
                           kAnyLiteral = 5;
};

// Any JSON object (response_format {"type": "json_object"}).
std::shared_ptr<const JsonSchemaGraph> json_object_graph();

// Compiles `schema`; `path` prefixes error paths ("schema"). Supported:
// type (one or a list), properties, required, additionalProperties, items,
// minItems, maxItems, minLength, maxLength, enum, const, anyOf, $ref to
// "#/$defs/..." or "#/definitions/..." (recursion allowed), and annotations
// (title, description, default, examples, $schema, $id, $comment). Throws
// SchemaError naming the first other keyword.
std::shared_ptr<const JsonSchemaGraph> compile_json_schema(const nlohmann::json& schema,
                                                           const std::string& path = "schema");

}  // namespace keel::serve
