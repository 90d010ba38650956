#include "serve/chat_template.h"

#include <cctype>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace keel::serve {

namespace fs = std::filesystem;

namespace {

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  for (size_t i = s.find(from); i != std::string::npos; i = s.find(from, i + to.size()))
    s.replace(i, from.size(), to);
}

}  // namespace

ChatTemplate ChatTemplate::load_or_default(const std::string& dir) {
  const fs::path p = fs::path(dir) / kChatTemplateFile;
  ChatTemplate t;
  if (!fs::exists(p)) return t;
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(ss.str());
  } catch (const std::exception& e) {
    fail<IoError>("{}: not valid JSON: {}", p.string(), e.what());
  }
  for (const char* key : {"message", "generation_prompt"}) {
    if (!j.contains(key) || !j[key].is_string())
      fail<IoError>("{}: field \"{}\" must be a string", p.string(), key);
  }
  t.message = j["message"].get<std::string>();
  t.generation_prompt = j["generation_prompt"].get<std::string>();
  if (t.message.find("{content}") == std::string::npos)
    fail<IoError>("{}: field \"message\" must contain {{content}}", p.string());
  return t;
}

std::string ChatTemplate::to_json() const {
  return nlohmann::json{{"message", message}, {"generation_prompt", generation_prompt}}.dump(2);
}

std::string ChatTemplate::render(
    const std::vector<std::pair<std::string, std::string>>& messages) const {
  std::string out;
  for (const auto& [role, content] : messages) {
    std::string Role = role;
    if (!Role.empty()) Role[0] = char(std::toupper(static_cast<unsigned char>(Role[0])));
    std::string m = message;
    // Content last, so braces inside a user's text are never expanded.
    replace_all(m, "{role}", role);
    replace_all(m, "{Role}", Role);
    replace_all(m, "{content}", content);
    out += m;
  }
  return out + generation_prompt;
}

std::vector<std::pair<std::string, bool>> chat_segments(
    const std::function<std::string(const ChatMessages&)>& render, const ChatMessages& messages) {
  // A marker cannot come from a request: roles are a fixed set and content
  // never passes through the renderer; the control bytes keep it out of any
  // plausible template. A template may use {content} more than once.
  const std::string open = "\x1d\x1ekeel-chat-content-", close = "\x1e\x1d";
  ChatMessages marked = messages;
  for (size_t i = 0; i < marked.size(); ++i) marked[i].second = open + std::to_string(i) + close;
  const std::string text = render(marked);
  std::vector<std::pair<std::string, bool>> out;
  std::vector<bool> seen(messages.size(), false);
  size_t pos = 0;
  for (size_t at = text.find(open); at != std::string::npos; at = text.find(open, pos)) {
    const size_t num = at + open.size(), end = text.find(close, num);
    size_t idx = messages.size();
    if (end != std::string::npos && end > num && end - num < 10 &&
        text.find_first_not_of("0123456789", num) == end)
      idx = std::stoul(text.substr(num, end - num));
    if (idx >= messages.size())
      fail("chat template: the rendered prompt holds a malformed content marker at byte {}", at);
    out.emplace_back(text.substr(pos, at - pos), true);
    out.emplace_back(messages[idx].second, false);
    seen[idx] = true;
    pos = end + close.size();
  }
  for (size_t i = 0; i < messages.size(); ++i)
    if (!seen[i])
      fail("chat template: the content of message {} is missing from the rendered prompt", i);
  out.emplace_back(text.substr(pos), true);
  return out;
}

}  // namespace keel::serve
