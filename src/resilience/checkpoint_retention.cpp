#include "resilience/checkpoint_retention.h"

#include <algorithm>
#include <filesystem>

#include <fmt/format.h>

#include "core/error.h"

namespace keel::resilience {

namespace fs = std::filesystem;

std::string checkpoint_dir_name(int64_t step) {
  return fmt::format("step-{:08d}", step);
}

std::optional<int64_t> checkpoint_step_from_name(const std::string& name) {
  constexpr std::string_view kPrefix = "step-";
  if (name.size() <= kPrefix.size() || !name.starts_with(kPrefix) || name.size() > 5 + 18)
    return std::nullopt;
  int64_t v = 0;
  for (size_t i = kPrefix.size(); i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return std::nullopt;
    v = v * 10 + (name[i] - '0');
  }
  return v;
}

std::vector<int64_t> list_checkpoint_steps(const std::string& root) {
  std::vector<int64_t> out;
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return out;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    if (!e.is_directory()) continue;
    if (auto s = checkpoint_step_from_name(e.path().filename().string())) out.push_back(*s);
  }
  if (ec) fail<IoError>("{}: cannot list checkpoints: {}", root, ec.message());
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<int64_t> checkpoints_to_remove(std::vector<int64_t> steps, int64_t keep_last,
                                           int64_t keep_every,
                                           std::optional<int64_t> just_written) {
  if (just_written) std::erase_if(steps, [&](int64_t s) { return s > *just_written; });
  std::sort(steps.begin(), steps.end());
  steps.erase(std::unique(steps.begin(), steps.end()), steps.end());
  const size_t keep = size_t(std::max<int64_t>(keep_last, 1));
  std::vector<int64_t> out;
  for (size_t i = 0; i + keep < steps.size(); ++i) {
    if (keep_every > 0 && steps[i] % keep_every == 0) continue;
    out.push_back(steps[i]);
  }
  return out;
}

std::vector<int64_t> apply_checkpoint_retention(const std::string& root, int64_t keep_last,
                                                int64_t keep_every,
                                                std::optional<int64_t> just_written) {
  const auto doomed =
      checkpoints_to_remove(list_checkpoint_steps(root), keep_last, keep_every, just_written);
  for (int64_t s : doomed) {
    std::error_code ec;
    fs::remove_all(fs::path(root) / checkpoint_dir_name(s), ec);
    if (ec)
      fail<IoError>("{}/{}: cannot remove old checkpoint: {}", root, checkpoint_dir_name(s),
                    ec.message());
  }
  return doomed;
}

}  // namespace keel::resilience
