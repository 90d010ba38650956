#include "resilience/checkpoint_retention.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include <fmt/format.h>

#include "core/error.h"
#include "resilience/checkpoint_manifest.h"

namespace keel::resilience {

namespace fs = std::filesystem;

namespace {
// Rehearsal: KEEL_FAULT_CKPT_DELETE_SLEEP_MS holds a deletion between moving
// the directory aside and removing it, so that a test can kill it there.
void fault_sleep_during_delete() {
  const char* ms = std::getenv("KEEL_FAULT_CKPT_DELETE_SLEEP_MS");
  if (ms && *ms) std::this_thread::sleep_for(std::chrono::milliseconds(std::atol(ms)));
}
}  // namespace

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
    const fs::path dir = fs::path(root) / checkpoint_dir_name(s);
    const fs::path aside =
        fs::path(root) / fmt::format(".del-{}-{}", checkpoint_dir_name(s), ::getpid());
    std::error_code ec;
    fs::rename(dir, aside, ec);
    if (ec)
      fail<IoError>("{}: cannot move the old checkpoint out of the way: {}", dir.string(),
                    ec.message());
    fault_sleep_during_delete();
    fs::remove_all(aside, ec);
    if (ec) fail<IoError>("{}: cannot remove old checkpoint: {}", aside.string(), ec.message());
  }
  return doomed;
}

std::vector<std::string> clean_checkpoint_leftovers(const std::string& root) {
  std::vector<std::string> removed;
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return removed;
  std::vector<fs::path> doomed;
  // A step directory without its manifest is what an interrupted delete of
  // older keel versions left; it is removed only while a complete checkpoint
  // remains, so damage to every checkpoint stops the run (naming the missing
  // manifests) instead of silently starting over.
  bool any_complete = false;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    std::error_code ec2;
    if (checkpoint_step_from_name(e.path().filename().string()) && e.is_directory(ec2) &&
        fs::exists(e.path() / kCheckpointManifestFile, ec2))
      any_complete = true;
  }
  for (const auto& e : fs::directory_iterator(root, ec)) {
    const std::string name = e.path().filename().string();
    const bool temp = name.starts_with(".tmp-step-") || name.starts_with(".old-step-") ||
                      name.starts_with(".del-step-") ||
                      name.starts_with(std::string(kCheckpointLatestFile) + ".tmp.");
    std::error_code ec2;
    const bool half_deleted = any_complete && checkpoint_step_from_name(name) &&
                              e.is_directory(ec2) &&
                              !fs::exists(e.path() / kCheckpointManifestFile, ec2);
    if (temp || half_deleted) doomed.push_back(e.path());
  }
  if (ec) fail<IoError>("{}: cannot list checkpoints: {}", root, ec.message());
  for (const fs::path& p : doomed) {
    fs::path target = p;
    const std::string name = p.filename().string();
    if (checkpoint_step_from_name(name)) {
      // Out of the namespace first, as retention does.
      target = p.parent_path() / fmt::format(".del-{}-{}", name, ::getpid());
      fs::rename(p, target, ec);
      if (ec) fail<IoError>("{}: cannot move aside: {}", p.string(), ec.message());
    }
    fs::remove_all(target, ec);
    if (ec) fail<IoError>("{}: cannot remove: {}", target.string(), ec.message());
    removed.push_back(p.string());
  }
  return removed;
}

}  // namespace keel::resilience
