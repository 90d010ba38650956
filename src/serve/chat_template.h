// The chat template: how (role, content) messages become the prompt text a
// plain language model continues. A model folder may carry its own as
// chat_template.json {"message": "...", "generation_prompt": "..."}, where
// "message" is applied to each message with {role} (as given), {Role}
// (first letter upper-cased) and {content} replaced, and "generation_prompt"
// is appended once at the end (the assistant's turn). See docs/serving.md.
#pragma once
#include <string>
#include <utility>
#include <vector>

namespace keel::serve {

struct ChatTemplate {
  std::string message = "{Role}: {content}\n\n";
  std::string generation_prompt = "Assistant:";

  // IoError naming the file when it exists but is not valid; the default
  // template when `dir` has no chat_template.json.
  static ChatTemplate load_or_default(const std::string& dir);
  // The template itself as the JSON text of chat_template.json.
  std::string to_json() const;
  std::string render(const std::vector<std::pair<std::string, std::string>>& messages) const;
};

inline constexpr const char* kChatTemplateFile = "chat_template.json";

}  // namespace keel::serve
