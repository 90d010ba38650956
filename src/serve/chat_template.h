// The chat template: how (role, content) messages become the prompt text a
// plain language model continues. A model folder may carry its own as
// chat_template.json {"message": "...", "generation_prompt": "..."}, where
// "message" is applied to each message with {role} (as given), {Role}
// (first letter upper-cased) and {content} replaced, and "generation_prompt"
// is appended once at the end (the assistant's turn). See docs/serving.md.
#pragma once
#include <functional>
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

using ChatMessages = std::vector<std::pair<std::string, std::string>>;

// The prompt of a chat as segments for data::Tokenizer::encode_segments:
// template text (true: special tokens in it count as such) and message
// content (false: a user's "<|endoftext|>" or role marker stays plain text,
// so no one can forge a turn). `render` is any renderer with
// ChatTemplate::render's contract (the engine's render_chat): each content is
// passed through it as a marker that is then cut out again. Throws
// keel::Error when the rendered text does not hold the markers in order.
std::vector<std::pair<std::string, bool>> chat_segments(
    const std::function<std::string(const ChatMessages&)>& render, const ChatMessages& messages);

inline constexpr const char* kChatTemplateFile = "chat_template.json";

}  // namespace keel::serve
