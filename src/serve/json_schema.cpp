#include "serve/json_schema.h"

#include <algorithm>
#include <map>
#include <set>

namespace keel::serve {

namespace {

using nlohmann::json;
using Kind = SchemaNode::Kind;

// The built-in nodes every graph starts with (JsonSchemaGraph::kAny ...).
void add_builtins(JsonSchemaGraph& g) {
  g.nodes.resize(6);
  g.nodes[JsonSchemaGraph::kAny].kind = Kind::Any;
  SchemaNode& obj = g.nodes[JsonSchemaGraph::kAnyObject];
  obj.kind = Kind::Object;
  obj.free_keys = true;
  obj.free_value = JsonSchemaGraph::kAny;
  SchemaNode& arr = g.nodes[JsonSchemaGraph::kAnyArray];
  arr.kind = Kind::Array;
  arr.items = JsonSchemaGraph::kAny;
  g.nodes[JsonSchemaGraph::kAnyString].kind = Kind::String;
  g.nodes[JsonSchemaGraph::kAnyNumber].kind = Kind::Number;
  SchemaNode& lit = g.nodes[JsonSchemaGraph::kAnyLiteral];
  lit.kind = Kind::Literals;
  lit.literals = {"true", "false", "null"};
}

const std::set<std::string>& annotations() {
  static const std::set<std::string> a = {"title",    "description", "default",  "examples",
                                          "$schema",  "$id",         "$comment", "deprecated",
                                          "readOnly", "writeOnly"};
  return a;
}

class Compiler {
 public:
  Compiler(const json& root, JsonSchemaGraph& g) : root_(root), g_(g) {}

  int32_t compile(const json& s, const std::string& path) {
    if (s.is_boolean()) {
      if (s.get<bool>()) return JsonSchemaGraph::kAny;
      throw SchemaError(path, fmt::format("{}: the schema false matches nothing", path));
    }
    if (!s.is_object())
      throw SchemaError(path,
                        fmt::format("{}: a schema must be an object, got {}", path, s.type_name()));
    for (const auto& [key, value] : s.items()) {
      (void)value;
      if (!known(key))
        throw SchemaError(
            path + "." + key,
            fmt::format("{}.{}: unsupported JSON Schema keyword \"{}\"", path, key, key));
    }
    if (auto it = s.find("$ref"); it != s.end()) {
      if (s.size() - count_annotations(s) != 1)
        throw SchemaError(path + ".$ref",
                          fmt::format("{}.$ref: keywords beside $ref are not supported", path));
      return ref(*it, path + ".$ref");
    }
    if (auto it = s.find("const"); it != s.end()) return literals({*it}, path + ".const");
    if (auto it = s.find("enum"); it != s.end()) {
      if (!it->is_array() || it->empty())
        throw SchemaError(path + ".enum", fmt::format("{}.enum: must be a non-empty array", path));
      return literals(std::vector<json>(it->begin(), it->end()), path + ".enum");
    }
    if (auto it = s.find("anyOf"); it != s.end()) {
      if (!it->is_array() || it->empty())
        throw SchemaError(path + ".anyOf",
                          fmt::format("{}.anyOf: must be a non-empty array", path));
      for (const char* k : {"type", "properties", "items"})
        if (s.contains(k))
          throw SchemaError(path + "." + k,
                            fmt::format("{}.{}: keywords beside anyOf are not supported", path, k));
      std::vector<int32_t> branches;
      for (size_t i = 0; i < it->size(); ++i)
        branches.push_back(compile((*it)[i], fmt::format("{}.anyOf[{}]", path, i)));
      return add_any_of(std::move(branches));
    }
    auto t = s.find("type");
    if (t == s.end()) {
      // No type: the keywords present say which shape is meant.
      if (s.contains("properties") || s.contains("required") || s.contains("additionalProperties"))
        return typed(s, "object", path);
      if (s.contains("items") || s.contains("minItems") || s.contains("maxItems"))
        return typed(s, "array", path);
      if (s.contains("minLength") || s.contains("maxLength")) return typed(s, "string", path);
      return JsonSchemaGraph::kAny;
    }
    if (t->is_string()) return typed(s, t->get<std::string>(), path);
    if (t->is_array() && !t->empty()) {
      std::vector<int32_t> branches;
      for (size_t i = 0; i < t->size(); ++i) {
        if (!(*t)[i].is_string())
          throw SchemaError(path + ".type", fmt::format("{}.type[{}]: must be a string", path, i));
        branches.push_back(typed(s, (*t)[i].get<std::string>(), path));
      }
      return branches.size() == 1 ? branches[0] : add_any_of(std::move(branches));
    }
    throw SchemaError(path + ".type",
                      fmt::format("{}.type: must be a string or a non-empty array", path));
  }

 private:
  static bool known(const std::string& k) {
    static const std::set<std::string> kw = {
        "type",      "properties", "required",   "additionalProperties",
        "items",     "minItems",   "maxItems",   "minLength",
        "maxLength", "enum",       "const",      "anyOf",
        "$ref",      "$defs",      "definitions"};
    return kw.count(k) || annotations().count(k);
  }
  static size_t count_annotations(const json& s) {
    size_t n = 0;
    for (const auto& [key, value] : s.items()) {
      (void)value;
      n += annotations().count(key) + (key == "$defs" || key == "definitions");
    }
    return n;
  }

  int32_t add(SchemaNode n) {
    g_.nodes.push_back(std::move(n));
    return int32_t(g_.nodes.size() - 1);
  }
  int32_t add_any_of(std::vector<int32_t> branches) {
    SchemaNode n;
    n.kind = Kind::AnyOf;
    n.branches = std::move(branches);
    return add(std::move(n));
  }

  // enum/const fix the value whatever else the schema says (type included).
  int32_t literals(const std::vector<json>& values, const std::string& path) {
    if (values.size() > 64)
      throw SchemaError(path, fmt::format("{}: at most 64 values, got {}", path, values.size()));
    SchemaNode n;
    n.kind = Kind::Literals;
    std::set<std::string> seen;
    for (const json& v : values) {
      std::string text = v.dump();
      if (seen.insert(text).second) n.literals.push_back(std::move(text));
    }
    return add(std::move(n));
  }

  int64_t count(const json& s, const char* key, const std::string& path, int64_t dflt) {
    auto it = s.find(key);
    if (it == s.end()) return dflt;
    if (!it->is_number_integer() || it->get<int64_t>() < 0)
      throw SchemaError(path + "." + key,
                        fmt::format("{}.{}: must be a non-negative integer", path, key));
    return it->get<int64_t>();
  }

  int32_t typed(const json& s, const std::string& type, const std::string& path) {
    SchemaNode n;
    if (type == "object") {
      n.kind = Kind::Object;
      const json* props = nullptr;
      if (auto it = s.find("properties"); it != s.end()) {
        if (!it->is_object())
          throw SchemaError(path + ".properties",
                            fmt::format("{}.properties: must be an object", path));
        if (it->size() > 64)
          throw SchemaError(path + ".properties",
                            fmt::format("{}.properties: at most 64 properties", path));
        props = &*it;
      }
      json extra = true;
      if (auto it = s.find("additionalProperties"); it != s.end()) extra = *it;
      if (!extra.is_boolean() && !extra.is_object())
        throw SchemaError(
            path + ".additionalProperties",
            fmt::format("{}.additionalProperties: must be a boolean or a schema", path));
      std::vector<std::string> names;
      if (props && !props->empty()) {
        if (extra.is_object() && !(extra.empty()))
          throw SchemaError(path + ".additionalProperties",
                            fmt::format("{}.additionalProperties: a schema beside properties "
                                        "is not supported",
                                        path));
        for (const auto& [name, _] : props->items()) names.push_back(name);
      } else if (!(extra.is_boolean() && !extra.get<bool>())) {
        n.free_keys = true;
      }
      if (auto it = s.find("required"); it != s.end()) {
        if (!it->is_array())
          throw SchemaError(path + ".required", fmt::format("{}.required: must be an array", path));
        for (const json& r : *it) {
          auto pos = r.is_string() ? std::find(names.begin(), names.end(), r.get<std::string>())
                                   : names.end();
          if (pos == names.end())
            throw SchemaError(
                path + ".required",
                fmt::format("{}.required: {} is not one of the properties", path, r.dump()));
          n.required |= uint64_t(1) << (pos - names.begin());
        }
      }
      const int32_t id = add(std::move(n));
      if (g_.nodes[size_t(id)].free_keys)
        g_.nodes[size_t(id)].free_value = extra.is_object()
                                              ? compile(extra, path + ".additionalProperties")
                                              : JsonSchemaGraph::kAny;
      for (const std::string& name : names) {
        const int32_t v = compile((*props)[name], path + ".properties." + name);
        g_.nodes[size_t(id)].keys.push_back(json(name).dump());
        g_.nodes[size_t(id)].values.push_back(v);
      }
      return id;
    }
    if (type == "array") {
      n.kind = Kind::Array;
      n.min_items = count(s, "minItems", path, 0);
      n.max_items = count(s, "maxItems", path, -1);
      if (n.max_items >= 0 && n.max_items < n.min_items)
        throw SchemaError(path + ".maxItems", fmt::format("{}.maxItems: below minItems", path));
      const int32_t id = add(std::move(n));
      int32_t items = JsonSchemaGraph::kAny;
      if (auto it = s.find("items"); it != s.end()) items = compile(*it, path + ".items");
      g_.nodes[size_t(id)].items = items;
      return id;
    }
    if (type == "string") {
      n.kind = Kind::String;
      n.min_length = count(s, "minLength", path, 0);
      n.max_length = count(s, "maxLength", path, -1);
      if (n.max_length >= 0 && n.max_length < n.min_length)
        throw SchemaError(path + ".maxLength", fmt::format("{}.maxLength: below minLength", path));
      return add(std::move(n));
    }
    if (type == "number" || type == "integer") {
      n.kind = type == "number" ? Kind::Number : Kind::Integer;
      return add(std::move(n));
    }
    if (type == "boolean" || type == "null") {
      n.kind = Kind::Literals;
      n.literals = type == "boolean" ? std::vector<std::string>{"true", "false"}
                                     : std::vector<std::string>{"null"};
      return add(std::move(n));
    }
    throw SchemaError(path + ".type", fmt::format("{}.type: unknown type \"{}\"", path, type));
  }

  int32_t ref(const json& r, const std::string& path) {
    if (!r.is_string()) throw SchemaError(path, fmt::format("{}: must be a string", path));
    const std::string target = r.get<std::string>();
    if (auto it = refs_.find(target); it != refs_.end()) return it->second;
    std::string section, name;
    for (const char* prefix : {"#/$defs/", "#/definitions/"}) {
      const std::string p = prefix;
      if (target.rfind(p, 0) == 0) {
        section = p.substr(2, p.size() - 3);
        name = target.substr(p.size());
      }
    }
    if (section.empty() || name.find('/') != std::string::npos)
      throw SchemaError(path, fmt::format("{}: only \"#/$defs/NAME\" and \"#/definitions/NAME\" "
                                          "references are supported, got \"{}\"",
                                          path, target));
    auto sec = root_.find(section);
    if (sec == root_.end() || !sec->is_object() || !sec->contains(name))
      throw SchemaError(path, fmt::format("{}: \"{}\" is not defined", path, target));
    // A placeholder first, so a recursive schema refers back to this node.
    SchemaNode placeholder;
    placeholder.kind = Kind::AnyOf;
    const int32_t id = add(std::move(placeholder));
    refs_[target] = id;
    const int32_t body = compile((*sec)[name], section + "." + name);
    g_.nodes[size_t(id)].branches = {body};
    return id;
  }

  const json& root_;
  JsonSchemaGraph& g_;
  std::map<std::string, int32_t> refs_;
};

}  // namespace

std::shared_ptr<const JsonSchemaGraph> json_object_graph() {
  auto g = std::make_shared<JsonSchemaGraph>();
  add_builtins(*g);
  g->root = JsonSchemaGraph::kAnyObject;
  return g;
}

std::shared_ptr<const JsonSchemaGraph> compile_json_schema(const nlohmann::json& schema,
                                                           const std::string& path) {
  auto g = std::make_shared<JsonSchemaGraph>();
  add_builtins(*g);
  Compiler c(schema, *g);
  g->root = c.compile(schema, path);
  return g;
}

}  // namespace keel::serve
