// Shared pieces of the checkpoint tests: a temporary directory, a tiny
// trainer on the synthetic corpus, and a checkpoint written from it.
#pragma once
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <string>

#include "../train/train_test_util.h"
#include "io/config.h"
#include "resilience/checkpoint_reader.h"
#include "resilience/checkpoint_state.h"
#include "resilience/checkpoint_writer.h"

namespace keel::resilience::testing {

// A fresh directory under the system temp dir, removed with the object.
class TempDir {
 public:
  TempDir() {
    static std::atomic<int> n{0};
    path_ = (std::filesystem::temp_directory_path() /
             ("keel_ckpt_test_" + std::to_string(::getpid()) + "_" + std::to_string(n++)))
                .string();
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// The config recorded in (and compared against) the test checkpoints.
inline io::Config test_config() {
  io::Config c = io::default_config();
  io::apply_overrides(c, {"model.n_layer=1", "model.n_head=2", "model.n_embd=32"});
  return c;
}

inline CheckpointExpectations expectations(train::Trainer& t, const io::Config& cfg) {
  CheckpointExpectations w;
  w.config = config_manifest_map(cfg);
  w.tokenizer_id = "tok-test";
  w.layout = training_state_layout(t);
  return w;
}

// Captures the trainer and writes it under root; returns the checkpoint path.
inline std::string save(train::Trainer& t, const std::string& root, const io::Config& cfg,
                        int64_t keep_last = 10) {
  CheckpointState st;
  capture_training_state(t, st);
  st.manifest.config = config_manifest_map(cfg);
  st.manifest.tokenizer_id = "tok-test";
  return write_checkpoint(root, st, {keep_last, 0}).path;
}

}  // namespace keel::resilience::testing
