// <run>/events.jsonl: the append-only record of what happened to a run (start,
// faults and the detector that caught them, rollbacks, restarts, exclusions,
// checkpoints, resumes). Written by the supervisor and by rank 0 of the world,
// one JSON object per line, each line flushed and fsynced before returning so
// a fault right after an event cannot lose it. Reports read it back.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace keel::resilience {

inline constexpr const char* kEventsFile = "events.jsonl";

// One line of events.jsonl. `event` is one of start, fault, rollback, restart,
// exclude, checkpoint, resume, finish, skip_batches, inject; `detector` one of
// crash, hang, nan, loss_spike, sdc, checkpoint_corrupt or "".
struct Event {
  double time = 0;  // unix seconds; 0: filled with the current time on append
  std::string event;
  std::string detector;
  int rank = -1;  // -1: no particular rank
  int64_t step = 0;
  int64_t steps_lost = 0;
  double time_lost_s = 0;
  int world_size = 0;
  std::string detail;
  nlohmann::json extra = nlohmann::json::object();  // further fields, merged into the line
};

// The line for e (no newline). Schema fields first, then `extra`.
std::string event_json(const Event& e);
// Parses one line; IoError naming `where` when it is not an event object.
Event parse_event(const std::string& line, const std::string& where);

// Current unix time in seconds.
double unix_now();

class EventsLog {
 public:
  // Opens (creating) `path` for appending. IoError naming it on failure.
  explicit EventsLog(const std::string& path);
  ~EventsLog();
  EventsLog(const EventsLog&) = delete;
  EventsLog& operator=(const EventsLog&) = delete;

  // Appends one line with a single write (O_APPEND, so lines of concurrent
  // writers never interleave) and fsyncs. Returns the event as written.
  Event append(Event e);
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
};

// Every event in the file, in order; a missing file is an empty list. A torn
// last line (the writer died mid-write) is ignored; any other bad line is an
// IoError naming the file and line.
std::vector<Event> read_events(const std::string& path);

}  // namespace keel::resilience
