// Tokenizer files: keel's JSON format (save/load) and GPT-2's encoder.json +
// vocab.bpe. Every parse error names the file and the field.
#include <unordered_map>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "data/byte_unicode.h"
#include "data/file_util.h"
#include "data/tokenizer.h"

namespace keel::data {

namespace {

using nlohmann::json;

json parse_json(const std::string& path) {
  const std::string text = read_file(path);
  try {
    return json::parse(text);
  } catch (const json::parse_error& e) {
    fail<IoError>("'{}': not valid JSON at byte {}: {}", path, e.byte, e.what());
  } catch (const json::out_of_range& e) {  // a number too large for any type
    fail<IoError>("'{}': not valid JSON: {}", path, e.what());
  }
}

std::string token_from_string(const std::string& path, const std::string& field,
                              const std::string& s) {
  std::string bytes;
  if (!gpt2_unicode_to_bytes(s, bytes))
    fail<IoError>("'{}': field '{}': '{}' is not a byte-level token string", path, field, s);
  return bytes;
}

}  // namespace

std::string Tokenizer::to_json() const {
  json j;
  j["format"] = "keel-bpe";
  j["version"] = 1;
  j["id"] = id_;
  json vocab = json::array();
  for (const auto& v : vocab_) vocab.push_back(bytes_to_gpt2_unicode(v));
  j["vocab"] = std::move(vocab);
  json merges = json::array();
  for (const auto& [a, b] : merges_)
    merges.push_back(bytes_to_gpt2_unicode(vocab_[size_t(a)]) + " " +
                     bytes_to_gpt2_unicode(vocab_[size_t(b)]));
  j["merges"] = std::move(merges);
  json specials = json::object();
  for (const auto& s : specials_) specials[s.text] = s.id;
  j["special_tokens"] = std::move(specials);
  return j.dump(1);
}

void Tokenizer::save(const std::string& path) const {
  write_file_atomic(path, to_json() + "\n");
}

Tokenizer Tokenizer::load(const std::string& path) {
  const json j = parse_json(path);
  if (!j.is_object()) fail<IoError>("'{}': top level is not a JSON object", path);
  auto field = [&](const char* name) -> const json& {
    auto it = j.find(name);
    if (it == j.end()) fail<IoError>("'{}': missing field '{}'", path, name);
    return *it;
  };
  const json& format = field("format");
  if (!format.is_string() || format.get<std::string>() != "keel-bpe")
    fail<IoError>("'{}': field 'format' must be \"keel-bpe\", got {}", path, format.dump());
  const json& version = field("version");
  if (!version.is_number_integer() || version.get<int64_t>() != 1)
    fail<IoError>("'{}': field 'version' must be 1, got {}", path, version.dump());

  const json& jv = field("vocab");
  if (!jv.is_array() || jv.empty())
    fail<IoError>("'{}': field 'vocab' must be a non-empty array", path);
  std::vector<SpecialToken> specials;
  const json& js = field("special_tokens");
  if (!js.is_object()) fail<IoError>("'{}': field 'special_tokens' must be an object", path);
  for (auto it = js.begin(); it != js.end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 ||
        it.value().get<int64_t>() >= int64_t(jv.size()))
      fail<IoError>("'{}': field 'special_tokens.{}' must be an id in [0, {}), got {}", path,
                    it.key(), jv.size(), it.value().dump());
    specials.push_back({it.key(), int32_t(it.value().get<int64_t>())});
  }
  std::sort(specials.begin(), specials.end(), [](auto& a, auto& b) { return a.id < b.id; });

  std::vector<std::string> vocab;
  vocab.reserve(jv.size());
  std::unordered_map<std::string, int32_t> by_bytes;
  for (size_t i = 0; i < jv.size(); ++i) {
    const std::string f = fmt::format("vocab[{}]", i);
    if (!jv[i].is_string()) fail<IoError>("'{}': field '{}' must be a string", path, f);
    vocab.push_back(token_from_string(path, f, jv[i].get<std::string>()));
    bool special = false;
    for (const auto& s : specials) special |= (s.id == int32_t(i));
    if (!special) by_bytes.emplace(vocab.back(), int32_t(i));
  }
  const json& jm = field("merges");
  if (!jm.is_array()) fail<IoError>("'{}': field 'merges' must be an array", path);
  std::vector<std::pair<int32_t, int32_t>> merges;
  merges.reserve(jm.size());
  for (size_t r = 0; r < jm.size(); ++r) {
    const std::string f = fmt::format("merges[{}]", r);
    if (!jm[r].is_string()) fail<IoError>("'{}': field '{}' must be a string", path, f);
    const std::string m = jm[r].get<std::string>();
    const size_t sp = m.find(' ');
    if (sp == std::string::npos || sp == 0 || sp + 1 == m.size() ||
        m.find(' ', sp + 1) != std::string::npos)
      fail<IoError>("'{}': field '{}' must be two tokens separated by one space, got '{}'", path, f,
                    m);
    int32_t ids[2];
    for (int k = 0; k < 2; ++k) {
      const std::string part = k == 0 ? m.substr(0, sp) : m.substr(sp + 1);
      auto it = by_bytes.find(token_from_string(path, f, part));
      if (it == by_bytes.end())
        fail<IoError>("'{}': field '{}': token '{}' is not in the vocab", path, f, part);
      ids[k] = it->second;
    }
    merges.emplace_back(ids[0], ids[1]);
  }
  Tokenizer t;
  try {
    t = from_parts(std::move(vocab), std::move(merges), std::move(specials));
  } catch (const Error& e) {
    fail<IoError>("'{}': {}", path, e.what());
  }
  if (auto it = j.find("id");
      it != j.end() && (!it->is_string() || it->get<std::string>() != t.id()))
    fail<IoError>("'{}': field 'id' is {} but the vocab and merges hash to \"{}\"", path,
                  it->dump(), t.id());
  return t;
}

Tokenizer Tokenizer::load_gpt2(const std::string& encoder_json, const std::string& vocab_bpe) {
  const json j = parse_json(encoder_json);
  if (!j.is_object() || j.empty())
    fail<IoError>("'{}': must be a non-empty object token -> id", encoder_json);
  std::vector<std::string> vocab(j.size());
  std::vector<bool> seen(j.size(), false);
  std::vector<SpecialToken> specials;
  std::unordered_map<std::string, int32_t> by_str;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const auto& v = it.value();
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() >= int64_t(j.size()))
      fail<IoError>("'{}': field '{}' must be an id in [0, {}), got {}", encoder_json, it.key(),
                    j.size(), v.dump());
    const auto id = size_t(v.get<int64_t>());
    if (seen[id])
      fail<IoError>("'{}': field '{}': id {} is used twice", encoder_json, it.key(), id);
    seen[id] = true;
    by_str.emplace(it.key(), int32_t(id));
    if (it.key() == kEndOfText) {
      vocab[id] = it.key();
      specials.push_back({it.key(), int32_t(id)});
    } else {
      vocab[id] = token_from_string(encoder_json, it.key(), it.key());
    }
  }
  const std::string text = read_file(vocab_bpe);
  std::vector<std::pair<int32_t, int32_t>> merges;
  size_t pos = 0;
  int64_t line_no = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line_no == 1 && line.rfind("#version", 0) == 0) continue;
    if (line.empty()) continue;
    const size_t sp = line.find(' ');
    if (sp == std::string::npos || sp == 0 || sp + 1 == line.size())
      fail<IoError>("'{}': line {}: expected two tokens separated by a space, got '{}'", vocab_bpe,
                    line_no, line);
    const std::string a = line.substr(0, sp), b = line.substr(sp + 1);
    auto ia = by_str.find(a), ib = by_str.find(b);
    if (ia == by_str.end() || ib == by_str.end())
      fail<IoError>("'{}': line {}: token '{}' is not in '{}'", vocab_bpe, line_no,
                    ia == by_str.end() ? a : b, encoder_json);
    merges.emplace_back(ia->second, ib->second);
  }
  try {
    return from_parts(std::move(vocab), std::move(merges), std::move(specials));
  } catch (const IoError&) {
    throw;
  } catch (const Error& e) {
    fail<IoError>("'{}' + '{}': {}", encoder_json, vocab_bpe, e.what());
  }
}

Tokenizer Tokenizer::from_gpt2_strings(const std::vector<std::string>& tokens,
                                       const std::vector<bool>& special,
                                       const std::vector<std::string>& merges,
                                       const std::string& where) {
  std::vector<std::string> vocab(tokens.size());
  std::vector<SpecialToken> specials;
  std::unordered_map<std::string, int32_t> by_str;
  for (size_t i = 0; i < tokens.size(); ++i) {
    const auto id = int32_t(i);
    if (i < special.size() && special[i]) {
      vocab[i] = tokens[i];
      specials.push_back({tokens[i], id});
    } else {
      vocab[i] = token_from_string(where, fmt::format("tokens[{}]", i), tokens[i]);
    }
    if (!by_str.emplace(tokens[i], id).second)
      fail<IoError>("'{}': field 'tokens[{}]': '{}' appears twice", where, i, tokens[i]);
  }
  std::vector<std::pair<int32_t, int32_t>> ids;
  ids.reserve(merges.size());
  for (size_t r = 0; r < merges.size(); ++r) {
    const std::string& m = merges[r];
    const size_t sp = m.find(' ', 1);
    auto a = sp == std::string::npos ? by_str.end() : by_str.find(m.substr(0, sp));
    auto b = sp == std::string::npos ? by_str.end() : by_str.find(m.substr(sp + 1));
    if (a == by_str.end() || b == by_str.end())
      fail<IoError>("'{}': field 'merges[{}]': '{}' is not two tokens of the vocabulary", where, r,
                    m);
    ids.emplace_back(a->second, b->second);
  }
  try {
    return from_parts(std::move(vocab), std::move(ids), std::move(specials));
  } catch (const IoError&) {
    throw;
  } catch (const Error& e) {
    fail<IoError>("'{}': {}", where, e.what());
  }
}

Tokenizer Tokenizer::load_gpt2_dir(const std::string& dir) {
  return load_gpt2(dir + "/encoder.json", dir + "/vocab.bpe");
}

}  // namespace keel::data
