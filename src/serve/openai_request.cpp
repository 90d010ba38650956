#include "serve/openai_request.h"

#include <cmath>
#include <limits>

#include "serve/json_schema.h"

namespace keel::serve {

namespace {

using nlohmann::json;

// The member `key` of `obj`, or nullptr when absent or null (OpenAI clients
// send null for "not set").
const json* field(const json& obj, const char* key) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return nullptr;
  return &*it;
}

[[noreturn]] void fail_type(const std::string& param, const char* want, const json& got) {
  fail_request(param, "invalid_type", "{}: expected {}, got {}", param, want, got.type_name());
}

std::optional<bool> get_bool(const json& obj, const char* key) {
  const json* v = field(obj, key);
  if (!v) return std::nullopt;
  if (!v->is_boolean()) fail_type(key, "a boolean", *v);
  return v->get<bool>();
}

std::optional<double> get_number(const json& obj, const char* key) {
  const json* v = field(obj, key);
  if (!v) return std::nullopt;
  if (!v->is_number()) fail_type(key, "a number", *v);
  return v->get<double>();
}

// Integers only (16.0 is a float in JSON and is refused); values beyond
// int64 are reported as out of range rather than wrapped.
std::optional<int64_t> get_int(const json& obj, const char* key) {
  const json* v = field(obj, key);
  if (!v) return std::nullopt;
  if (v->is_number_unsigned()) {
    if (v->get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max()))
      fail_request(key, "invalid_value", "{}: {} is out of range", key, v->dump());
    return int64_t(v->get<uint64_t>());
  }
  if (v->is_number_integer()) return v->get<int64_t>();
  if (v->is_number_float())
    fail_request(key, "invalid_type", "{}: expected an integer, got {}", key, v->dump());
  fail_type(key, "an integer", *v);
}

std::optional<std::string> get_string(const json& obj, const char* key) {
  const json* v = field(obj, key);
  if (!v) return std::nullopt;
  if (!v->is_string()) fail_type(key, "a string", *v);
  return v->get<std::string>();
}

// Features that keel does not implement: accepted only at their "off" value.
void refuse_unsupported(const json& body) {
  if (auto n = get_int(body, "best_of"); n && *n != 1)
    fail_request("best_of", "unsupported_value", "best_of: only best_of = 1 is supported");
  if (auto e = get_bool(body, "echo"); e && *e)
    fail_request("echo", "unsupported_value", "echo: not supported");
  if (const json* v = field(body, "logit_bias"); v && !(v->is_object() && v->empty()))
    fail_request("logit_bias", "unsupported_value", "logit_bias: not supported");
  for (const char* key : {"suffix", "tools", "functions", "tool_choice", "function_call"}) {
    if (field(body, key)) fail_request(key, "unsupported_value", "{}: not supported", key);
  }
}

// response_format: {"type": "text"} (no constraint), {"type": "json_object"}
// or {"type": "json_schema", "json_schema": {"name", "schema", "strict"}}.
std::shared_ptr<const JsonSchemaGraph> parse_response_format(const json& body) {
  const std::string param = "response_format";
  const json* v = field(body, "response_format");
  if (!v) return nullptr;
  if (!v->is_object()) fail_type(param, "an object", *v);
  const json* t = field(*v, "type");
  if (!t || !t->is_string())
    fail_request(param, "invalid_value",
                 "response_format.type: expected \"text\", \"json_object\" or \"json_schema\"");
  const std::string type = t->get<std::string>();
  if (type == "text") return nullptr;
  if (type == "json_object") return json_object_graph();
  if (type != "json_schema")
    fail_request(param, "invalid_value",
                 "response_format.type: expected \"text\", \"json_object\" or \"json_schema\", "
                 "got \"{}\"",
                 type);
  const json* js = field(*v, "json_schema");
  if (!js || !js->is_object())
    fail_request(param, "invalid_value",
                 "response_format.json_schema: an object {{\"name\", \"schema\"}} is required");
  if (const json* name = field(*js, "name"); name && !name->is_string())
    fail_request(param, "invalid_type", "response_format.json_schema.name: expected a string");
  if (const json* strict = field(*js, "strict"); strict && !strict->is_boolean())
    fail_request(param, "invalid_type", "response_format.json_schema.strict: expected a boolean");
  const json* schema = field(*js, "schema");
  if (!schema) fail_request(param, "invalid_value", "response_format.json_schema.schema: required");
  try {
    return compile_json_schema(*schema, "response_format.json_schema.schema");
  } catch (const SchemaError& e) {
    fail_request(param, "invalid_value", "{}", e.what());
  }
}

void parse_sampling(const json& body, const RequestLimits& limits, ParsedRequest& out) {
  SamplingParams& s = out.sampling;
  std::optional<int64_t> max_tokens = get_int(body, "max_tokens");
  const char* max_key = "max_tokens";
  if (auto m = get_int(body, "max_completion_tokens")) {
    max_tokens = m;
    max_key = "max_completion_tokens";
  }
  if (max_tokens) {
    if (*max_tokens <= 0)
      fail_request(max_key, "invalid_value", "{}: must be >= 1, got {}", max_key, *max_tokens);
    if (limits.context_length > 0 && *max_tokens > limits.context_length)
      fail_request(max_key, "context_length_exceeded",
                   "{}: {} is more than the model's context length of {} tokens", max_key,
                   *max_tokens, limits.context_length);
    out.max_tokens = max_tokens;
    s.max_tokens = *max_tokens;
  }
  if (auto t = get_number(body, "temperature")) {
    if (!(*t >= 0 && *t <= 2))
      fail_request("temperature", "invalid_value", "temperature: must be in [0, 2], got {}", *t);
    s.temperature = *t;
  }
  if (auto p = get_number(body, "top_p")) {
    if (!(*p > 0 && *p <= 1))
      fail_request("top_p", "invalid_value", "top_p: must be in (0, 1], got {}", *p);
    s.top_p = *p;
  }
  if (auto k = get_int(body, "top_k")) {
    if (*k < 0) fail_request("top_k", "invalid_value", "top_k: must be >= 0, got {}", *k);
    s.top_k = *k;
  }
  if (auto r = get_number(body, "repetition_penalty")) {
    if (!(*r > 0 && std::isfinite(*r)))
      fail_request("repetition_penalty", "invalid_value", "repetition_penalty: must be > 0, got {}",
                   *r);
    s.repetition_penalty = *r;
  }
  if (auto n = get_int(body, "n")) {
    if (*n < 1 || *n > 16) fail_request("n", "invalid_value", "n: must be in [1, 16], got {}", *n);
    out.n = *n;
  }
  // Log-probabilities: completions take `logprobs` as the number of
  // alternatives (0..5, OpenAI's legacy limit); chat takes `logprobs: true`
  // and `top_logprobs` (0..20).
  if (out.endpoint == Endpoint::Completions) {
    if (const json* v = field(body, "logprobs"); v && !v->is_null()) {
      if (v->is_boolean()) {
        if (v->get<bool>()) s.logprobs = 0;
      } else if (v->is_number_integer()) {
        const int64_t n = v->get<int64_t>();
        if (n < 0 || n > 5)
          fail_request("logprobs", "invalid_value", "logprobs: must be in [0, 5], got {}", n);
        s.logprobs = n;
      } else {
        fail_type("logprobs", "an integer", *v);
      }
    }
  } else {
    bool on = false;
    if (auto b = get_bool(body, "logprobs")) on = *b;
    if (auto n = get_int(body, "top_logprobs")) {
      if (*n < 0 || *n > 20)
        fail_request("top_logprobs", "invalid_value", "top_logprobs: must be in [0, 20], got {}",
                     *n);
      if (!on)
        fail_request("top_logprobs", "invalid_value", "top_logprobs: needs \"logprobs\": true");
      s.logprobs = *n;
    } else if (on) {
      s.logprobs = 0;
    }
  }
  for (auto [key, dst] : {std::pair{"presence_penalty", &s.presence_penalty},
                          std::pair{"frequency_penalty", &s.frequency_penalty}}) {
    if (auto v = get_number(body, key)) {
      if (!(*v >= -2 && *v <= 2))
        fail_request(key, "invalid_value", "{}: must be in [-2, 2], got {}", key, *v);
      *dst = *v;
    }
  }
  if (const json* v = field(body, "seed")) {
    out.seed_given = true;
    if (v->is_number_unsigned()) {
      s.seed = v->get<uint64_t>();
    } else if (v->is_number_integer()) {
      s.seed = uint64_t(v->get<int64_t>());  // negative seeds are valid in OpenAI's API
    } else {
      fail_type("seed", "an integer", *v);
    }
  }
  if (const json* v = field(body, "stop")) {
    std::vector<std::string> stop;
    if (v->is_string()) {
      stop.push_back(v->get<std::string>());
    } else if (v->is_array()) {
      if (v->size() > 4)
        fail_request("stop", "invalid_value", "stop: at most 4 sequences, got {}", v->size());
      for (const json& x : *v) {
        if (!x.is_string()) fail_type("stop", "a string or an array of strings", x);
        stop.push_back(x.get<std::string>());
      }
    } else {
      fail_type("stop", "a string or an array of strings", *v);
    }
    for (const std::string& x : stop)
      if (x.empty()) fail_request("stop", "invalid_value", "stop: empty stop sequence");
    s.stop = std::move(stop);
  }
  if (auto ignore = get_bool(body, "ignore_eos")) s.stop_at_eot = !*ignore;
  s.response_format = parse_response_format(body);
  out.stream = get_bool(body, "stream").value_or(false);
  if (const json* v = field(body, "stream_options")) {
    if (!v->is_object()) fail_type("stream_options", "an object", *v);
    if (!out.stream)
      fail_request("stream_options", "invalid_value",
                   "stream_options: only allowed when stream is true");
    try {
      out.include_usage = get_bool(*v, "include_usage").value_or(false);
    } catch (const ApiError&) {
      fail_request("stream_options.include_usage", "invalid_type",
                   "stream_options.include_usage: expected a boolean");
    }
  }
}

void parse_prompt(const json& body, const RequestLimits& limits, ParsedRequest& out) {
  const json* p = field(body, "prompt");
  if (!p) fail_request("prompt", "missing_required_parameter", "prompt: required");
  if (p->is_string()) {
    out.prompt_text = p->get<std::string>();
    return;
  }
  if (!p->is_array()) fail_type("prompt", "a string or an array", *p);
  // ["one string"] is one prompt; several prompts in one request are not supported.
  if (p->size() == 1 && (*p)[0].is_string()) {
    out.prompt_text = (*p)[0].get<std::string>();
    return;
  }
  if (p->empty()) fail_request("prompt", "invalid_value", "prompt: empty array");
  if ((*p)[0].is_string() || (*p)[0].is_array())
    fail_request("prompt", "unsupported_value",
                 "prompt: several prompts in one request are not supported");
  out.prompt_is_ids = true;
  out.prompt_ids.reserve(p->size());
  for (size_t i = 0; i < p->size(); ++i) {
    const json& x = (*p)[i];
    if (!x.is_number_integer())
      fail_request("prompt", "invalid_type", "prompt[{}]: expected a token id, got {}", i,
                   x.type_name());
    const int64_t id = x.get<int64_t>();
    if (x.is_number_unsigned() && x.get<uint64_t>() > uint64_t(INT32_MAX))
      fail_request("prompt", "invalid_value", "prompt[{}]: token id {} out of range", i, x.dump());
    if (id < 0 || (limits.vocab_size > 0 && id >= limits.vocab_size))
      fail_request("prompt", "invalid_value", "prompt[{}]: token id {} is outside [0, {})", i, id,
                   limits.vocab_size);
    out.prompt_ids.push_back(int32_t(id));
  }
}

// Content is a string or an array of {"type": "text", "text": ...} parts.
std::string message_content(const json& m, size_t i) {
  const std::string param = fmt::format("messages[{}].content", i);
  const json* c = field(m, "content");
  if (!c) fail_request(param, "missing_required_parameter", "{}: required", param);
  if (c->is_string()) return c->get<std::string>();
  if (!c->is_array()) fail_type(param, "a string or an array of content parts", *c);
  std::string text;
  for (size_t j = 0; j < c->size(); ++j) {
    const json& part = (*c)[j];
    const std::string pp = fmt::format("{}[{}]", param, j);
    if (!part.is_object()) fail_type(pp, "an object", part);
    const std::string type = get_string(part, "type").value_or("");
    if (type != "text")
      fail_request(pp, "unsupported_value", "{}.type: only \"text\" parts are supported", pp);
    const json* t = field(part, "text");
    if (!t || !t->is_string())
      fail_request(pp + ".text", "invalid_type", "{}.text: expected a string", pp);
    text += t->get<std::string>();
  }
  return text;
}

void parse_messages(const json& body, ParsedRequest& out) {
  const json* ms = field(body, "messages");
  if (!ms) fail_request("messages", "missing_required_parameter", "messages: required");
  if (!ms->is_array()) fail_type("messages", "an array", *ms);
  if (ms->empty()) fail_request("messages", "invalid_value", "messages: must not be empty");
  for (size_t i = 0; i < ms->size(); ++i) {
    const json& m = (*ms)[i];
    const std::string param = fmt::format("messages[{}]", i);
    if (!m.is_object()) fail_type(param, "an object", m);
    const json* r = field(m, "role");
    if (!r) fail_request(param + ".role", "missing_required_parameter", "{}.role: required", param);
    if (!r->is_string()) fail_type(param + ".role", "a string", *r);
    const std::string role = r->get<std::string>();
    if (role != "system" && role != "user" && role != "assistant" && role != "developer")
      fail_request(param + ".role", "invalid_value",
                   "{}.role: must be system, developer, user or assistant, got \"{}\"", param,
                   role);
    out.messages.emplace_back(role == "developer" ? "system" : role, message_content(m, i));
  }
}

}  // namespace

size_t find_invalid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2, cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3, cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4, cp = c & 0x07;
    } else {
      return i;  // continuation byte, overlong lead (C0/C1) or F5..FF
    }
    if (i + len > n) return i;
    for (size_t k = 1; k < len; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) return i;
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF))
      return i;
    i += len;
  }
  return std::string_view::npos;
}

namespace {

// The number the JSON library's overflow message quotes ("... parsing '1e309'").
std::string number_in_message(std::string_view what) {
  const size_t a = what.find('\''), b = what.rfind('\'');
  return a != std::string_view::npos && b > a ? std::string(what.substr(a + 1, b - a - 1)) : "";
}

// The key whose value is that number, when the body has exactly one such
// `"key": number` (else empty: the error then names no field).
std::string field_of_number(std::string_view body, std::string_view what) {
  const std::string num = number_in_message(what);
  if (num.empty()) return "";
  std::string found;
  for (size_t at = body.find(num); at != std::string_view::npos; at = body.find(num, at + 1)) {
    size_t i = at;
    while (i > 0 && (body[i - 1] == ' ' || body[i - 1] == '\t' || body[i - 1] == '\n')) --i;
    if (i == 0 || body[i - 1] != ':') continue;
    --i;
    while (i > 0 && (body[i - 1] == ' ' || body[i - 1] == '\t' || body[i - 1] == '\n')) --i;
    if (i < 2 || body[i - 1] != '"') continue;
    const size_t open = body.rfind('"', i - 2);
    if (open == std::string_view::npos) continue;
    const std::string key(body.substr(open + 1, i - 2 - open));
    if (!found.empty() && found != key) return "";
    found = key;
  }
  return found;
}

}  // namespace

ParsedRequest parse_request(Endpoint endpoint, std::string_view body, const RequestLimits& limits) {
  if (body.empty())
    fail_request("", "invalid_json", "request body is empty (expected a JSON object)");
  if (size_t bad = find_invalid_utf8(body); bad != std::string_view::npos)
    fail_request("", "invalid_utf8", "request body is not valid UTF-8 (byte offset {})", bad);
  json doc;
  try {
    doc = json::parse(body);
  } catch (const json::parse_error& e) {
    fail_request("", "invalid_json", "request body is not valid JSON: parse error at byte {}",
                 e.byte);
  } catch (const json::out_of_range& e) {  // a number too large for any type
    const std::string param = field_of_number(body, e.what());
    if (!param.empty())
      fail_request(param, "invalid_value", "{}: the number is out of range ({})", param,
                   number_in_message(e.what()));
    fail_request("", "invalid_json", "request body is not valid JSON: {}", e.what());
  }
  if (!doc.is_object())
    fail_request("", "invalid_json", "request body must be a JSON object, got {}", doc.type_name());
  ParsedRequest out;
  out.endpoint = endpoint;
  const json* model = field(doc, "model");
  if (!model) fail_request("model", "missing_required_parameter", "model: required");
  if (!model->is_string()) fail_type("model", "a string", *model);
  out.model = model->get<std::string>();
  refuse_unsupported(doc);
  parse_sampling(doc, limits, out);
  if (endpoint == Endpoint::Completions) {
    parse_prompt(doc, limits, out);
  } else {
    parse_messages(doc, out);
  }
  return out;
}

}  // namespace keel::serve
