#include "resilience/checkpoint_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <thread>

#include <fmt/format.h>

#include "core/error.h"
#include "io/atomic_file.h"
#include "resilience/checkpoint_checksum.h"
#include "resilience/checkpoint_retention.h"

namespace keel::resilience {

namespace fs = std::filesystem;

namespace {

void fsync_dir(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) fail<IoError>("{}: cannot open directory to sync: {}", dir, std::strerror(errno));
  const int rc = ::fsync(fd);
  const int e = errno;
  ::close(fd);
  // Some filesystems refuse fsync on directories (EINVAL); the files are synced already.
  if (rc != 0 && e != EINVAL)
    fail<IoError>("{}: fsync of directory failed: {}", dir, std::strerror(e));
}

void remove_stale_temporaries(const std::string& root) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    const std::string name = e.path().filename().string();
    if (name.starts_with(".tmp-step-") || name.starts_with(".old-step-") ||
        name.starts_with(".del-step-")) {
      std::error_code ec2;
      fs::remove_all(e.path(), ec2);
      if (ec2)
        fail<IoError>("{}: cannot remove stale temporary: {}", e.path().string(), ec2.message());
    }
  }
}

void fault_sleep_after_first_file() {
  const char* ms = std::getenv("KEEL_FAULT_CKPT_WRITE_SLEEP_MS");
  if (ms && *ms) std::this_thread::sleep_for(std::chrono::milliseconds(std::atol(ms)));
}

}  // namespace

WrittenCheckpoint write_checkpoint(const std::string& root, CheckpointState& state,
                                   const CheckpointWriteOptions& opt) {
  const auto t0 = std::chrono::steady_clock::now();
  io::make_dirs(root);
  remove_stale_temporaries(root);
  const int64_t step = state.manifest.step;
  const std::string name = checkpoint_dir_name(step);
  const std::string tmp = (fs::path(root) / fmt::format(".tmp-{}-{}", name, ::getpid())).string();
  const std::string final_dir = (fs::path(root) / name).string();
  io::make_dirs(tmp);

  struct Part {
    const char* file;
    const std::vector<io::NamedTensor>* tensors;
  };
  std::vector<Part> parts = {{kCheckpointParamsFile, &state.params},
                             {kCheckpointOptimizerFile, &state.optimizer},
                             {kCheckpointModelStateFile, &state.model_state}};
  if (!state.extra.empty()) parts.push_back({kCheckpointExtraFile, &state.extra});
  state.manifest.files.clear();
  WrittenCheckpoint out;
  for (size_t i = 0; i < parts.size(); ++i) {
    const std::string path = (fs::path(tmp) / parts[i].file).string();
    io::write_safetensors(path, *parts[i].tensors, {{"step", std::to_string(step)}});
    // Hashing what is on disk (not what was meant to be written) makes the
    // manifest vouch for the bytes a reader will see.
    const FileChecksum c = checksum_file(path);
    state.manifest.files.push_back({parts[i].file, c.bytes, c.xxh3});
    out.bytes += c.bytes;
    if (i == 0) fault_sleep_after_first_file();
  }
  state.manifest.created_unix =
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  io::write_file_atomic((fs::path(tmp) / kCheckpointManifestFile).string(),
                        manifest_to_json(state.manifest));
  fsync_dir(tmp);
  // A checkpoint of the same step may exist (rewritten after a resume from an
  // older one): move it aside first, since rename() cannot replace a non-empty directory.
  std::error_code ec;
  if (fs::exists(final_dir, ec)) {
    const std::string old = (fs::path(root) / fmt::format(".old-{}-{}", name, ::getpid())).string();
    if (::rename(final_dir.c_str(), old.c_str()) != 0)
      fail<IoError>("{}: cannot move the previous checkpoint aside: {}", final_dir,
                    std::strerror(errno));
    fs::remove_all(old, ec);
  }
  if (::rename(tmp.c_str(), final_dir.c_str()) != 0)
    fail<IoError>("{}: rename from {} failed: {}", final_dir, tmp, std::strerror(errno));
  fsync_dir(root);
  io::write_file_atomic((fs::path(root) / kCheckpointLatestFile).string(), name + "\n");
  apply_checkpoint_retention(root, opt.keep_last, opt.keep_every, step);
  out.path = final_dir;
  out.step = step;
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return out;
}

}  // namespace keel::resilience
