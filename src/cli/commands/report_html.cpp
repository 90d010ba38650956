#include "cli/commands/report_html.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <map>

#include <fmt/format.h>

#include "cli/commands/report_page.h"

namespace keel::cli::report {

namespace {

using Json = nlohmann::json;

// JSON numbers cannot be NaN: keep finite values, null otherwise.
Json num(double v) {
  return std::isfinite(v) ? Json(v) : Json(nullptr);
}

// Seconds from the first event to a fault's recovery: the next resume (or
// restart, rollback) event; NaN when the run never recovered.
double recover_seconds(const std::vector<resilience::GoodputEvent>& ev, size_t fault) {
  for (size_t j = fault + 1; j < ev.size(); ++j) {
    if (ev[j].event == "fault") break;
    if (ev[j].event == "resume") return ev[j].time - ev[fault].time;
  }
  for (size_t j = fault + 1; j < ev.size(); ++j) {
    if (ev[j].event == "fault") break;
    if (ev[j].event == "restart" || ev[j].event == "rollback") return ev[j].time - ev[fault].time;
  }
  return NAN;
}

Json run_json(const RunData& run) {
  Json r;
  r["name"] = run.name;
  r["dir"] = run.dir;
  r["notices"] = run.notices;
  r["tokens_per_step"] = run.tokens_per_step;

  // The record that stands for each step is its last one (a rollback redoes
  // steps); series are drawn in step order.
  std::map<int64_t, size_t> last;
  for (size_t i = 0; i < run.step.size(); ++i) last[run.step[i]] = i;
  Json series = Json::object();
  for (const auto& [name, col] : run.columns) {
    std::vector<double> x, y;
    x.reserve(last.size());
    y.reserve(last.size());
    for (const auto& [s, i] : last)
      if (std::isfinite(col[i])) {
        x.push_back(double(s));
        y.push_back(col[i]);
      }
    if (x.empty()) continue;
    downsample_min_max(x, y, kMaxPoints);
    series[name] = Json::array({x, y});
  }
  r["series"] = series;
  r["records"] = run.step.size();
  r["final_step"] = last.empty() ? 0 : last.rbegin()->first;
  auto final_of = [&](const char* col) -> Json {
    const auto it = run.columns.find(col);
    if (it == run.columns.end()) return nullptr;
    for (auto p = last.rbegin(); p != last.rend(); ++p)
      if (std::isfinite(it->second[p->second])) return it->second[p->second];
    return nullptr;
  };
  r["final"] = {{"loss", final_of("loss")}, {"val_loss", final_of("val_loss")}};

  double t0 = INFINITY;
  for (const auto& e : run.events)
    if (e.time > 0) t0 = std::min(t0, e.time);
  Json events = Json::array();
  for (size_t i = 0; i < run.events.size(); ++i) {
    const auto& e = run.events[i];
    events.push_back(
        {{"t", num(std::isfinite(t0) ? e.time - t0 : 0.0)},
         {"time", e.time},
         {"event", e.event},
         {"detector", e.detector},
         {"rank", e.rank},
         {"step", e.step},
         {"steps_lost", e.steps_lost},
         {"time_lost_s", num(e.time_lost_s)},
         {"recover_s", e.event == "fault" ? num(recover_seconds(run.events, i)) : Json()},
         {"world_size", e.world_size},
         {"detail", e.detail}});
  }
  r["events"] = events;
  r["t0"] = num(t0);
  r["goodput"] = run.goodput().to_json();
  r["summary"] = run.summary;
  r["environment"] = run.environment;
  r["config"] = run.config;
  r["config_toml"] = run.config_toml;
  return r;
}

std::string now_utc() {
  const std::time_t t = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

// JSON inside <script>: "<" is escaped so no "</script>" can end the element.
std::string script_safe(const std::string& json) {
  std::string out;
  out.reserve(json.size());
  for (char c : json) {
    if (c == '<')
      out += "\\u003c";
    else
      out += c;
  }
  return out;
}

// Replaces the first `count` occurrences of `what`.
void replace_first(std::string& s, std::string_view what, const std::string& with, int count = 1) {
  size_t p = 0;
  for (int i = 0; i < count && (p = s.find(what, p)) != std::string::npos; ++i, p += with.size())
    s.replace(p, what.size(), with);
}

}  // namespace

void downsample_min_max(std::vector<double>& x, std::vector<double>& y, size_t max_points) {
  std::vector<double> fx, fy;
  for (size_t i = 0; i < x.size(); ++i)
    if (std::isfinite(y[i])) {
      fx.push_back(x[i]);
      fy.push_back(y[i]);
    }
  const size_t n = fx.size();
  if (n <= max_points || max_points < 4) {
    x = std::move(fx);
    y = std::move(fy);
    return;
  }
  const size_t buckets = (max_points - 2) / 2;
  std::vector<double> ox{fx[0]}, oy{fy[0]};
  for (size_t b = 0; b < buckets; ++b) {
    // Bucket b covers records [lo, hi) of the interior 1..n-2.
    const size_t lo = 1 + b * (n - 2) / buckets, hi = 1 + (b + 1) * (n - 2) / buckets;
    if (lo >= hi) continue;
    size_t imin = lo, imax = lo;
    for (size_t i = lo; i < hi; ++i) {
      if (fy[i] < fy[imin]) imin = i;
      if (fy[i] > fy[imax]) imax = i;
    }
    const size_t a = std::min(imin, imax), c = std::max(imin, imax);
    ox.push_back(fx[a]);
    oy.push_back(fy[a]);
    if (c != a) {
      ox.push_back(fx[c]);
      oy.push_back(fy[c]);
    }
  }
  ox.push_back(fx[n - 1]);
  oy.push_back(fy[n - 1]);
  x = std::move(ox);
  y = std::move(oy);
}

Json page_data(const std::vector<RunData>& runs, bool live) {
  Json d;
  d["generated"] = now_utc();
  d["live"] = live;
  d["runs"] = Json::array();
  for (const auto& r : runs) d["runs"].push_back(run_json(r));
  return d;
}

std::string render_html(const std::vector<RunData>& runs, bool live) {
  std::string title = "keel report: ";
  for (size_t i = 0; i < runs.size(); ++i) title += (i ? " vs " : "") + runs[i].name;
  std::string page(kReportPage);
  std::string safe_title;
  for (char c : title) {
    if (c == '<')
      safe_title += "&lt;";
    else if (c == '&')
      safe_title += "&amp;";
    else
      safe_title += c;
  }
  replace_first(page, "@TITLE@", safe_title, 2);  // <title> and <h1>
  replace_first(
      page, "@DATA@",
      script_safe(page_data(runs, live).dump(-1, ' ', false, Json::error_handler_t::replace)));
  return page;
}

}  // namespace keel::cli::report
