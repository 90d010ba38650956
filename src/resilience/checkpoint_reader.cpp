#include "resilience/checkpoint_reader.h"

#include <filesystem>
#include <map>

#include <fmt/format.h>

#include "backend/device_tensor.h"
#include "io/atomic_file.h"
#include "io/file_bytes.h"
#include "resilience/checkpoint_checksum.h"
#include "resilience/checkpoint_retention.h"

namespace keel::resilience {

namespace fs = std::filesystem;

namespace {

const CheckpointFileEntry* find_file(const CheckpointManifest& m, const std::string& name) {
  for (const auto& f : m.files)
    if (f.name == name) return &f;
  return nullptr;
}

// The file's tensors must be exactly `want` (names, dtypes, shapes; order free).
void check_tensors(const io::SafetensorsFile& f, const std::vector<TensorSpec>& want) {
  if (f.entries().size() != want.size()) {
    for (const auto& e : f.entries()) {
      bool known = false;
      for (const auto& w : want) known = known || w.name == e.name;
      if (!known)
        fail<CheckpointError>("{}: tensor '{}' is not part of this model's training state",
                              f.path(), e.name);
    }
  }
  for (const auto& w : want) {
    if (!f.contains(w.name))
      fail<CheckpointError>("{}: tensor '{}' is missing (this run's model has it)", f.path(),
                            w.name);
    const auto& e = f.entry(w.name);
    if (e.dtype != w.dtype || e.shape != w.shape)
      fail<CheckpointError>("{}: tensor '{}' is {}{} but this run's model has {}{}", f.path(),
                            w.name, dtype_name(e.dtype), e.shape.str(), dtype_name(w.dtype),
                            w.shape.str());
  }
}

// Runs f, turning an IoError (a file unreadable or malformed) into the
// CheckpointError that makes the caller skip this checkpoint.
template <class F>
auto as_checkpoint_error(F&& f) {
  try {
    return f();
  } catch (const CheckpointError&) {
    throw;
  } catch (const IoError& e) {
    throw CheckpointError(e.what());
  }
}

}  // namespace

LoadedCheckpoint verify_checkpoint(const std::string& dir, const CheckpointExpectations& want) {
  const std::string mpath = (fs::path(dir) / kCheckpointManifestFile).string();
  std::error_code ec;
  if (!fs::is_regular_file(mpath, ec)) fail<CheckpointError>("{}: manifest is missing", mpath);
  const std::string text = as_checkpoint_error([&] { return io::read_file_bytes(mpath); });
  CheckpointManifest m = parse_manifest(text, mpath);
  if (auto s = checkpoint_step_from_name(fs::path(dir).filename().string()); s && *s != m.step)
    fail<CheckpointError>("{}: step {} does not match the directory name", mpath, m.step);
  if (const std::string d = config_difference(m.config, want.config); !d.empty())
    fail<CheckpointError>("{}: checkpoint of another config: {}", mpath, d);
  if (!want.tokenizer_id.empty() && m.tokenizer_id != want.tokenizer_id)
    fail<CheckpointError>("{}: checkpoint of another tokenizer: '{}', this run uses '{}'", mpath,
                          m.tokenizer_id, want.tokenizer_id);
  for (const char* required :
       {kCheckpointParamsFile, kCheckpointOptimizerFile, kCheckpointModelStateFile})
    if (!find_file(m, required))
      fail<CheckpointError>("{}: the manifest lists no '{}'", mpath, required);
  // Each file is read once: hashed, then parsed from the same bytes.
  std::map<std::string, io::FileBytes> files;
  for (const auto& f : m.files) {
    const std::string path = (fs::path(dir) / f.name).string();
    if (!fs::is_regular_file(path, ec))
      fail<CheckpointError>("{}: file is missing (listed in {})", path, kCheckpointManifestFile);
    io::FileBytes bytes = as_checkpoint_error([&] { return io::FileBytes::read(path); });
    if (bytes.size() != f.bytes)
      fail<CheckpointError>("{}: size is {} bytes but the manifest says {} ({})", path,
                            bytes.size(), f.bytes, bytes.size() < f.bytes ? "truncated" : "grown");
    if (const std::string x = xxh3_hex(bytes.data(), bytes.size()); x != f.xxh3)
      fail<CheckpointError>("{}: checksum mismatch: xxh3 {} but the manifest says {}", path, x,
                            f.xxh3);
    files[f.name] = std::move(bytes);
  }
  auto open_part = [&](const char* name) {
    const std::string path = (fs::path(dir) / name).string();
    return as_checkpoint_error(
        [&] { return io::SafetensorsFile::from_bytes(path, std::move(files.at(name))); });
  };
  LoadedCheckpoint out{dir,
                       std::move(m),
                       open_part(kCheckpointParamsFile),
                       open_part(kCheckpointOptimizerFile),
                       open_part(kCheckpointModelStateFile),
                       std::nullopt};
  if (find_file(out.manifest, kCheckpointExtraFile)) out.extra = open_part(kCheckpointExtraFile);
  check_tensors(out.params, want.layout.params);
  check_tensors(out.optimizer, want.layout.optimizer);
  check_tensors(out.model_state, want.layout.model_state);
  return out;
}

std::optional<LoadedCheckpoint> load_newest_verified(
    const std::string& root, const CheckpointExpectations& want,
    const std::function<void(const RejectedCheckpoint&)>& on_reject) {
  const auto steps = list_checkpoint_steps(root);
  if (steps.empty()) return std::nullopt;
  std::string reasons;
  for (auto it = steps.rbegin(); it != steps.rend(); ++it) {
    const std::string dir = (fs::path(root) / checkpoint_dir_name(*it)).string();
    try {
      return verify_checkpoint(dir, want);
    } catch (const IoError& e) {
      // CheckpointError, or an IoError from reading the files: either way this
      // checkpoint cannot be trusted and the next older one is tried.
      if (on_reject) on_reject({dir, e.what()});
      reasons += fmt::format("\n  {}", e.what());
    }
  }
  fail<CheckpointError>(
      "{}: none of the {} checkpoints verifies, so the run stops instead of starting over "
      "(move the directory away or pass --no-resume to start from scratch):{}",
      root, steps.size(), reasons);
}

void restore_training_tensors(train::Trainer& trainer, const StoredTensorReader& params,
                              const StoredTensorReader& moments,
                              std::pair<size_t, size_t> moment_range,
                              const StoredTensorReader& state, int64_t step, int64_t optimizer_t) {
  train::AdamW& opt = trainer.optimizer();
  backend::Backend& be = trainer.model().backend();
  const auto read = [&](const StoredTensorReader& from, const std::string& name, Tensor& dst) {
    backend::fill_from_host(be, dst, [&](Tensor& h) { from(name, h); });
  };
  const auto& ps = opt.params();
  for (size_t i = 0; i < ps.size(); ++i) {
    read(params, ps[i]->name, ps[i]->value);
    if (i < moment_range.first || i >= moment_range.second) continue;
    read(moments, "exp_avg." + ps[i]->name, opt.m()[i]);
    read(moments, "exp_avg_sq." + ps[i]->name, opt.v()[i]);
  }
  for (auto& [name, t] : trainer.model().state_buffers()) read(state, name, *t);
  opt.set_t(optimizer_t);
  trainer.set_step_count(step);
  trainer.model().sync_compute_weights();
}

void restore_training_state(const LoadedCheckpoint& ckpt, train::Trainer& trainer) {
  const auto from = [](const io::SafetensorsFile& f) {
    return [&f](const std::string& name, Tensor& h) { f.read_into(name, h); };
  };
  restore_training_tensors(trainer, from(ckpt.params), from(ckpt.optimizer), {0, SIZE_MAX},
                           from(ckpt.model_state), ckpt.manifest.step, ckpt.manifest.optimizer_t);
}

}  // namespace keel::resilience
