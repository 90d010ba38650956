// Goodput of a training run: how much of its wall time went into steps that
// count, and where the rest went (per fault kind, from events.jsonl). Both
// `keel report goodput` and the HTML report's summary are computed here.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace keel::resilience {

// One line of <run>/events.jsonl (schema in docs/DESIGN.md; unknown fields
// are kept in `extra`).
struct GoodputEvent {
  double time = 0;    // unix seconds
  std::string event;  // start, fault, rollback, restart, exclude, checkpoint, resume, finish, ...
  std::string detector;  // crash, hang, nan, loss_spike, sdc, checkpoint_corrupt, or ""
  int64_t rank = -1;
  int64_t step = 0;
  int64_t steps_lost = 0;
  double time_lost_s = 0;
  int64_t world_size = 0;
  std::string detail;
  std::string source;  // resume: "snapshot" (memory) or "disk"
};

// Parses one events.jsonl line. A line that is not a JSON object, or whose
// known fields have the wrong type, is an IoError naming `where` (e.g.
// "run/events.jsonl:7") and the field. Missing fields keep their defaults.
GoodputEvent parse_goodput_event(std::string_view line, const std::string& where);

// What the goodput needs from one metrics.jsonl line.
struct GoodputStep {
  int64_t step = 0;
  double step_seconds = 0;
  bool skipped = false;  // the update was not applied (non-finite loss/gradient)
};

struct Goodput {
  double wall_s = 0;  // first to last event, or the training time when there are no events
  double productive_s =
      0;  // step_seconds of the steps that stand (last record of each step, not skipped)
  // step_seconds of step records later redone after a rollback; steps the
  // events say were redone but whose records the resume trimmed count at the
  // median step time.
  double recomputed_s = 0;
  double skipped_s = 0;  // step_seconds of skipped updates
  // time_lost_s summed per fault kind: an event's own detector, else the
  // detector of the latest fault before it ("other" when there is none).
  std::map<std::string, double> lost_by_kind;
  std::map<std::string, int64_t> faults_by_kind;     // "fault" events per detector
  int64_t steps_recomputed = 0;                      // sum of steps_lost over events
  std::map<std::string, int64_t> resumes_by_source;  // "snapshot", "disk"
  // Per fault kind: faults seen, the mean seconds from an injected fault to
  // its detection (injected faults only: a real one has no start mark), and
  // from detection to the next resume.
  struct FaultTiming {
    int64_t faults = 0, detected = 0, resumed = 0;
    double detect_s = 0, resume_s = 0;  // sums
  };
  std::map<std::string, FaultTiming> timing_by_kind;
  int64_t step_records = 0;  // metrics lines
  int64_t final_step = 0;    // highest step recorded
  int64_t events = 0;
  double ratio = 0;  // effective-training-time ratio: productive_s / wall_s, in [0, 1]

  nlohmann::ordered_json to_json() const;
};

// Goodput from the parsed events and step records, in file order. wall_hint
// (e.g. summary.json's train_seconds) is used when events span no time; the
// wall time is never less than the time the step records account for.
Goodput compute_goodput(const std::vector<GoodputEvent>& events,
                        const std::vector<GoodputStep>& steps,
                        std::optional<double> wall_hint = std::nullopt);

// The text `keel report goodput` prints (several lines, newline-terminated).
std::string format_goodput(const Goodput& g);

}  // namespace keel::resilience
