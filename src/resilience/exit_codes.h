// The exit codes a training rank uses to tell the supervisor why it stopped,
// so `keel launch` can map a dead world to "restart from the last checkpoint",
// "finished" or "give up" without parsing logs.
#pragma once

namespace keel::resilience {

// The run reached its last step.
inline constexpr int kExitFinished = 0;
// A keel::Error (bad config, missing file): restarting cannot help.
inline constexpr int kExitError = 1;
// A detector (repeated NaN, loss spike, replica mismatch) threw the state
// away: restart from the newest verified checkpoint.
inline constexpr int kExitRollback = 75;
// The hang watchdog aborted a step or collective that ran past its timeout.
inline constexpr int kExitHang = 76;

// Short name of an exit code for logs ("rollback", "hang", ...).
inline const char* exit_code_name(int code) {
  switch (code) {
    case kExitFinished:
      return "finished";
    case kExitError:
      return "error";
    case kExitRollback:
      return "rollback";
    case kExitHang:
      return "hang";
    default:
      return "crash";
  }
}

}  // namespace keel::resilience
