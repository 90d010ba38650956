#include "resilience/goodput.h"

#include <algorithm>
#include <cmath>
#include <unordered_map>

#include <fmt/format.h>

#include "core/error.h"

namespace keel::resilience {

namespace {

using Json = nlohmann::json;

double number_field(const Json& j, const char* key, double dflt, const std::string& where) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return dflt;
  if (!it->is_number())
    fail<IoError>("{}: field '{}': expected a number, got {}", where, key, it->type_name());
  return it->get<double>();
}

int64_t int_field(const Json& j, const char* key, int64_t dflt, const std::string& where) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return dflt;
  if (it->is_number_integer()) return it->get<int64_t>();
  // 3.0 is accepted as 3; 3.5 is not an integer.
  if (it->is_number_float()) {
    const double v = it->get<double>();
    if (std::isfinite(v) && v == std::floor(v)) return int64_t(v);
  }
  fail<IoError>("{}: field '{}': expected an integer, got {}", where, key, it->dump());
}

std::string string_field(const Json& j, const char* key, const std::string& where) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return "";
  if (!it->is_string())
    fail<IoError>("{}: field '{}': expected a string, got {}", where, key, it->type_name());
  return it->get<std::string>();
}

}  // namespace

GoodputEvent parse_goodput_event(std::string_view line, const std::string& where) {
  Json j;
  try {
    j = Json::parse(line);
  } catch (const Json::parse_error& e) {
    fail<IoError>("{}: not a JSON line (byte {}): {}", where, e.byte, e.what());
  } catch (const Json::out_of_range& e) {  // a number too large for any type
    fail<IoError>("{}: not a JSON line: {}", where, e.what());
  }
  if (!j.is_object()) fail<IoError>("{}: expected a JSON object, got {}", where, j.type_name());
  GoodputEvent ev;
  ev.time = number_field(j, "time", 0, where);
  ev.event = string_field(j, "event", where);
  ev.detector = string_field(j, "detector", where);
  ev.rank = int_field(j, "rank", -1, where);
  ev.step = int_field(j, "step", 0, where);
  ev.steps_lost = int_field(j, "steps_lost", 0, where);
  ev.time_lost_s = number_field(j, "time_lost_s", 0, where);
  ev.world_size = int_field(j, "world_size", 0, where);
  ev.detail = string_field(j, "detail", where);
  ev.source = string_field(j, "source", where);
  if (ev.event.empty()) fail<IoError>("{}: field 'event' is missing or empty", where);
  return ev;
}

Goodput compute_goodput(const std::vector<GoodputEvent>& events,
                        const std::vector<GoodputStep>& steps, std::optional<double> wall_hint) {
  Goodput g;
  g.events = int64_t(events.size());
  g.step_records = int64_t(steps.size());

  // A step recorded again after a rollback replaces the earlier record: only
  // the last record of each step number stands.
  std::unordered_map<int64_t, size_t> last;
  for (size_t i = 0; i < steps.size(); ++i) last[steps[i].step] = i;
  double recorded_s = 0;
  int64_t superseded = 0;
  std::vector<double> standing;
  for (size_t i = 0; i < steps.size(); ++i) {
    const double s =
        std::isfinite(steps[i].step_seconds) ? std::max(0.0, steps[i].step_seconds) : 0;
    recorded_s += s;
    g.final_step = std::max(g.final_step, steps[i].step);
    if (last[steps[i].step] != i) {
      g.recomputed_s += s;
      ++superseded;
    } else if (steps[i].skipped) {
      g.skipped_s += s;
    } else {
      g.productive_s += s;
      standing.push_back(s);
    }
  }

  std::string current_kind;
  double t_min = INFINITY, t_max = -INFINITY;
  double inject_t = -1, fault_t = -1;  // the open injection and the fault awaiting its resume
  std::string fault_kind;
  for (const auto& ev : events) {
    if (std::isfinite(ev.time) && ev.time > 0) {
      t_min = std::min(t_min, ev.time);
      t_max = std::max(t_max, ev.time);
    }
    if (ev.event == "inject") inject_t = ev.time;
    if (ev.event == "fault") {
      current_kind = ev.detector.empty() ? "unknown" : ev.detector;
      ++g.faults_by_kind[current_kind];
      Goodput::FaultTiming& ft = g.timing_by_kind[current_kind];
      ++ft.faults;
      if (inject_t > 0 && ev.time >= inject_t) ft.detect_s += ev.time - inject_t, ++ft.detected;
      inject_t = -1;
      fault_t = ev.time;
      fault_kind = current_kind;
    }
    if (ev.event == "resume") ++g.resumes_by_source[ev.source.empty() ? "disk" : ev.source];
    if (ev.event == "resume" && fault_t > 0 && ev.time >= fault_t) {
      Goodput::FaultTiming& ft = g.timing_by_kind[fault_kind];
      ft.resume_s += ev.time - fault_t, ++ft.resumed;
      fault_t = -1;
    }
    g.steps_recomputed += std::max<int64_t>(0, ev.steps_lost);
    if (ev.time_lost_s > 0) {
      const std::string kind = !ev.detector.empty()    ? ev.detector
                               : !current_kind.empty() ? current_kind
                                                       : "other";
      g.lost_by_kind[kind] += ev.time_lost_s;
    }
  }

  if (g.steps_recomputed > superseded && !standing.empty()) {
    std::sort(standing.begin(), standing.end());
    g.recomputed_s += double(g.steps_recomputed - superseded) * standing[standing.size() / 2];
  }
  g.wall_s = recorded_s;
  if (t_max > t_min) g.wall_s = std::max(g.wall_s, t_max - t_min);
  if (wall_hint && std::isfinite(*wall_hint)) g.wall_s = std::max(g.wall_s, *wall_hint);
  g.ratio = g.wall_s > 0 ? std::clamp(g.productive_s / g.wall_s, 0.0, 1.0) : 0.0;
  return g;
}

nlohmann::ordered_json Goodput::to_json() const {
  nlohmann::ordered_json j;
  j["wall_s"] = wall_s;
  j["productive_s"] = productive_s;
  j["recomputed_s"] = recomputed_s;
  j["skipped_s"] = skipped_s;
  j["lost_by_kind"] = lost_by_kind;
  j["faults_by_kind"] = faults_by_kind;
  j["steps_recomputed"] = steps_recomputed;
  j["resumes_by_source"] = resumes_by_source;
  nlohmann::ordered_json t = nlohmann::ordered_json::object();
  for (const auto& [kind, ft] : timing_by_kind)
    t[kind] = {{"faults", ft.faults},
               {"detect_s", ft.detected ? ft.detect_s / double(ft.detected) : 0.0},
               {"resume_s", ft.resumed ? ft.resume_s / double(ft.resumed) : 0.0}};
  j["timing_by_kind"] = t;
  j["step_records"] = step_records;
  j["final_step"] = final_step;
  j["events"] = events;
  j["ratio"] = ratio;
  return j;
}

std::string format_goodput(const Goodput& g) {
  std::string out;
  out += fmt::format("wall time             {:10.3f} s\n", g.wall_s);
  out += fmt::format("productive steps      {:10.3f} s  ({} steps stand, {} step records)\n",
                     g.productive_s, g.final_step, g.step_records);
  out += fmt::format("recomputed steps      {:10.3f} s\n", g.recomputed_s);
  out += fmt::format("skipped updates       {:10.3f} s\n", g.skipped_s);
  double lost = 0;
  for (const auto& [kind, s] : g.lost_by_kind) lost += s;
  out += fmt::format("time lost to faults   {:10.3f} s\n", lost);
  for (const auto& [kind, s] : g.lost_by_kind) {
    const auto it = g.faults_by_kind.find(kind);
    out += fmt::format("  {:<20}{:10.3f} s  ({} fault{})\n", kind, s,
                       it == g.faults_by_kind.end() ? 0 : it->second,
                       it != g.faults_by_kind.end() && it->second == 1 ? "" : "s");
  }
  for (const auto& [kind, n] : g.faults_by_kind)
    if (!g.lost_by_kind.count(kind))
      out += fmt::format("  {:<20}{:10.3f} s  ({} fault{})\n", kind, 0.0, n, n == 1 ? "" : "s");
  for (const auto& [kind, ft] : g.timing_by_kind) {
    std::string d = ft.detected ? fmt::format("detected {:.3f} s after injection",
                                              ft.detect_s / double(ft.detected))
                                : std::string("detection time unknown (not injected)");
    if (ft.resumed)
      d += fmt::format(", resumed {:.3f} s after detection", ft.resume_s / double(ft.resumed));
    out += fmt::format("  {:<20}{} (mean of {})\n", kind, d, ft.faults);
  }
  out += fmt::format("steps recomputed      {:10}\n", g.steps_recomputed);
  if (!g.resumes_by_source.empty()) {
    const auto count = [&](const char* k) {
      const auto it = g.resumes_by_source.find(k);
      return it == g.resumes_by_source.end() ? int64_t(0) : it->second;
    };
    out += fmt::format("resumes               {:10}  (from memory snapshots {}, from disk {})\n",
                       count("snapshot") + count("disk"), count("snapshot"), count("disk"));
  }
  out += fmt::format("events                {:10}\n", g.events);
  out += fmt::format("effective-training-time ratio {:.4f} ({:.1f}%)\n", g.ratio, 100 * g.ratio);
  return out;
}

}  // namespace keel::resilience
