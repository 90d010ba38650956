// Which checkpoints to keep: the newest keep_last, plus every step that is a
// multiple of keep_every (long-range history for going back past a slow
// corruption). Also the directory naming every other part relies on:
// <root>/step-00000020 for a finished checkpoint, <root>/.tmp-step-... while
// it is written, and <root>/latest naming the newest finished one.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace keel::resilience {

inline constexpr const char* kCheckpointLatestFile = "latest";

// "step-00000020".
std::string checkpoint_dir_name(int64_t step);
// The step of a finished checkpoint's directory name; nullopt for anything
// else (temporary directories, `latest`, stray files).
std::optional<int64_t> checkpoint_step_from_name(const std::string& name);

// Finished checkpoint steps under root, ascending (empty when root is absent).
std::vector<int64_t> list_checkpoint_steps(const std::string& root);

// The steps (from `steps`, any order) that retention removes: all but the
// keep_last largest and those divisible by keep_every (keep_every 0: none).
// keep_last < 1 counts as 1: the newest checkpoint is never removed.
// With just_written (the step the writer has just finished), that step is
// never removed and steps above it neither count nor go: they are left by a
// run that got further and whose newer checkpoint failed verification, and
// counting them as "newest" would delete the checkpoint just written.
std::vector<int64_t> checkpoints_to_remove(std::vector<int64_t> steps, int64_t keep_last,
                                           int64_t keep_every,
                                           std::optional<int64_t> just_written = std::nullopt);

// Removes those directories under root; returns the steps removed. Each is
// first renamed out of the checkpoint namespace (<root>/.del-step-...), so a
// deletion cut short never leaves a step-... directory missing files.
std::vector<int64_t> apply_checkpoint_retention(const std::string& root, int64_t keep_last,
                                                int64_t keep_every,
                                                std::optional<int64_t> just_written = std::nullopt);

// What an interrupted save or delete leaves under root: .tmp-step-...,
// .old-step-... and .del-step-... directories, latest.tmp.* files, and
// step-... directories without a manifest (half deleted by an older keel; a
// finished checkpoint is renamed into place whole). Removes them; returns the
// paths removed. Call it from the one rank that writes, before listing.
std::vector<std::string> clean_checkpoint_leftovers(const std::string& root);

}  // namespace keel::resilience
