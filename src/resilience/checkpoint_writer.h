// Writes one checkpoint so that a crash at any moment leaves either the new
// checkpoint whole or no trace of it: every file goes into
// <root>/.tmp-step-NNNNNNNN-<pid>/ and is fsynced, the manifest (with each
// file's size and XXH3) is written last, the directory is fsynced and
// renamed to <root>/step-NNNNNNNN, and only then is <root>/latest replaced
// (atomically) and retention applied.
//
// Fault injection for tests: when the environment variable
// KEEL_FAULT_CKPT_WRITE_SLEEP_MS is set, the writer sleeps that long after the
// first file, so a test can kill the process in the middle of a write.
#pragma once
#include <cstdint>
#include <string>

#include "resilience/checkpoint_state.h"

namespace keel::resilience {

struct CheckpointWriteOptions {
  int64_t keep_last = 3;
  int64_t keep_every = 0;
};

struct WrittenCheckpoint {
  std::string path;  // <root>/step-NNNNNNNN
  int64_t step = 0;
  uint64_t bytes = 0;  // all files together
  double seconds = 0;  // wall time of the whole write
};

// Writes `state` (manifest.files is overwritten with the written files) as
// the checkpoint of state.manifest.step under root. Stale temporary
// directories of earlier interrupted writes are removed first. IoError naming
// the file on any failure; the previous `latest` then stays untouched.
WrittenCheckpoint write_checkpoint(const std::string& root, CheckpointState& state,
                                   const CheckpointWriteOptions& opt);

}  // namespace keel::resilience
