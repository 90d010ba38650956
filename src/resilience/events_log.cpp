#include "resilience/events_log.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <fstream>

#include "core/error.h"

namespace keel::resilience {

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

std::string event_json(const Event& e) {
  nlohmann::ordered_json j;
  j["time"] = e.time;
  j["event"] = e.event;
  j["detector"] = e.detector;
  j["rank"] = e.rank;
  j["step"] = e.step;
  j["steps_lost"] = e.steps_lost;
  j["time_lost_s"] = std::isfinite(e.time_lost_s) ? e.time_lost_s : 0.0;
  j["world_size"] = e.world_size;
  j["detail"] = e.detail;
  if (e.extra.is_object())
    for (auto it = e.extra.begin(); it != e.extra.end(); ++it)
      if (!j.contains(it.key())) j[it.key()] = it.value();
  return j.dump();
}

Event parse_event(const std::string& line, const std::string& where) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(line);
  } catch (const nlohmann::json::exception& ex) {
    fail<IoError>("{}: not a JSON line: {}", where, ex.what());
  }
  if (!j.is_object() || !j.contains("event") || !j["event"].is_string())
    fail<IoError>("{}: an event line needs a string field \"event\"", where);
  Event e;
  try {
    e.time = j.value("time", 0.0);
    e.event = j["event"].get<std::string>();
    e.detector = j.value("detector", std::string());
    e.rank = j.value("rank", -1);
    e.step = j.value("step", int64_t(0));
    e.steps_lost = j.value("steps_lost", int64_t(0));
    e.time_lost_s = j.value("time_lost_s", 0.0);
    e.world_size = j.value("world_size", 0);
    e.detail = j.value("detail", std::string());
  } catch (const nlohmann::json::exception& ex) {
    fail<IoError>("{}: bad event field: {}", where, ex.what());
  }
  for (auto it = j.begin(); it != j.end(); ++it) {
    static const char* kSchema[] = {"time",       "event",       "detector",   "rank",  "step",
                                    "steps_lost", "time_lost_s", "world_size", "detail"};
    bool known = false;
    for (const char* k : kSchema) known = known || it.key() == k;
    if (!known) e.extra[it.key()] = it.value();
  }
  return e;
}

EventsLog::EventsLog(const std::string& path) : path_(path) {
  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd_ < 0) fail<IoError>("{}: cannot open events file: {}", path, std::strerror(errno));
}

EventsLog::~EventsLog() {
  if (fd_ >= 0) ::close(fd_);
}

Event EventsLog::append(Event e) {
  if (e.time == 0) e.time = unix_now();
  const std::string line = event_json(e) + "\n";
  // One write call: with O_APPEND the kernel places it whole at the end, so
  // the supervisor and rank 0 can share the file.
  const ssize_t n = ::write(fd_, line.data(), line.size());
  if (n != ssize_t(line.size()))
    fail<IoError>("{}: cannot append event: {}", path_,
                  n < 0 ? std::strerror(errno) : "short write");
  if (::fsync(fd_) != 0) fail<IoError>("{}: cannot fsync events: {}", path_, std::strerror(errno));
  return e;
}

std::vector<Event> read_events(const std::string& path) {
  std::vector<Event> out;
  std::ifstream in(path);
  if (!in) return out;
  std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  size_t pos = 0;
  int64_t line_no = 0;
  while (pos < content.size()) {
    const size_t nl = content.find('\n', pos);
    ++line_no;
    if (nl == std::string::npos) break;  // torn last line: its writer died mid-write
    const std::string line = content.substr(pos, nl - pos);
    pos = nl + 1;
    if (line.empty()) continue;
    out.push_back(parse_event(line, fmt::format("{}:{}", path, line_no)));
  }
  return out;
}

}  // namespace keel::resilience
