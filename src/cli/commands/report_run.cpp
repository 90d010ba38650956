#include "cli/commands/report_run.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <toml++/toml.h>

#include "core/error.h"

namespace keel::cli::report {

namespace fs = std::filesystem;

namespace {

// The file's bytes, or nullopt (with a notice) when it is missing or unreadable.
std::optional<std::string> read_optional(const fs::path& p, RunData& run) {
  std::error_code ec;
  if (!fs::exists(p, ec)) {
    run.notices.push_back(fmt::format("{}: missing, skipped", p.filename().string()));
    return std::nullopt;
  }
  std::ifstream in(p, std::ios::binary);
  if (!in) {
    run.notices.push_back(fmt::format("{}: cannot be read, skipped", p.filename().string()));
    return std::nullopt;
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Splits into lines; `last_unterminated` tells whether the text ends mid-line.
std::vector<std::string_view> split_lines(const std::string& text, bool& last_unterminated) {
  std::vector<std::string_view> lines;
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) {
      lines.emplace_back(text.data() + pos, text.size() - pos);
      break;
    }
    lines.emplace_back(text.data() + pos, nl - pos);
    pos = nl + 1;
  }
  last_unterminated = !text.empty() && text.back() != '\n';
  return lines;
}

bool blank(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c == ' ' || c == '\t' || c == '\r'; });
}

// Notices for bad lines: one per line for the first few, then a count.
class BadLines {
 public:
  BadLines(std::string file, RunData& run) : file_(std::move(file)), run_(run) {}
  void add(size_t line_no, const std::string& why) {
    if (++count_ <= 5)
      run_.notices.push_back(fmt::format("{}:{}: {}, skipped", file_, line_no, why));
  }
  ~BadLines() {
    if (count_ > 5)
      run_.notices.push_back(
          fmt::format("{}: {} more bad lines skipped ({} in all)", file_, count_ - 5, count_));
  }

 private:
  std::string file_;
  RunData& run_;
  size_t count_ = 0;
};

void read_metrics(const fs::path& dir, RunData& run) {
  const auto text = read_optional(dir / kMetricsFile, run);
  if (!text) return;
  if (text->empty()) {
    run.notices.push_back(fmt::format("{}: empty, no training curves", kMetricsFile));
    return;
  }
  bool unterminated = false;
  const auto lines = split_lines(*text, unterminated);
  BadLines bad(kMetricsFile, run);
  for (size_t i = 0; i < lines.size(); ++i) {
    if (blank(lines[i])) continue;
    const bool last = i + 1 == lines.size();
    nlohmann::json j = nlohmann::json::parse(lines[i], nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) {
      bad.add(i + 1, last && unterminated ? "truncated last line" : "not a JSON object");
      continue;
    }
    const auto st = j.find("step");
    if (st == j.end() || !st->is_number_integer()) {
      bad.add(i + 1, "no integer \"step\"");
      continue;
    }
    const size_t row = run.step.size();
    run.step.push_back(st->get<int64_t>());
    const auto sk = j.find("skipped");
    run.skipped.push_back(sk != j.end() && sk->is_boolean() && sk->get<bool>());
    for (auto it = j.begin(); it != j.end(); ++it) {
      if (it.key() == "step") continue;
      // null is a non-finite value the writer could not put in JSON.
      if (!it->is_number() && !it->is_null()) continue;
      auto& col = run.columns[it.key()];
      col.resize(row + 1, NAN);
      col[row] = it->is_null() ? NAN : it->get<double>();
    }
  }
  for (auto& [k, col] : run.columns) col.resize(run.step.size(), NAN);
}

void read_events(const fs::path& dir, RunData& run) {
  const fs::path p = dir / kEventsFile;
  std::error_code ec;
  if (!fs::exists(p, ec)) {
    run.notices.push_back(fmt::format(
        "{}: missing, skipped (no fault timeline; goodput from metrics only)", kEventsFile));
    return;
  }
  const auto text = read_optional(p, run);
  if (!text) return;
  bool unterminated = false;
  const auto lines = split_lines(*text, unterminated);
  BadLines bad(kEventsFile, run);
  size_t nonblank = 0;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (blank(lines[i])) continue;
    ++nonblank;
    try {
      run.events.push_back(
          resilience::parse_goodput_event(lines[i], fmt::format("line {}", i + 1)));
    } catch (const IoError& e) {
      const bool last = i + 1 == lines.size();
      bad.add(i + 1, last && unterminated ? "truncated last line" : e.what());
    }
  }
  if (nonblank == 0) run.notices.push_back(fmt::format("{}: empty, no events", kEventsFile));
}

std::string toml_value_text(const toml::node& n) {
  std::ostringstream ss;
  if (auto s = n.as_string())
    ss << s->get();
  else if (n.is_array() || n.is_table())
    ss << toml::json_formatter{n};
  else
    n.visit([&](auto&& v) { ss << v; });
  return ss.str();
}

void flatten_toml(const toml::table& t, const std::string& prefix,
                  std::vector<std::pair<std::string, std::string>>& out) {
  for (auto&& [k, v] : t) {
    const std::string key =
        prefix.empty() ? std::string(k.str()) : prefix + "." + std::string(k.str());
    if (auto sub = v.as_table())
      flatten_toml(*sub, key, out);
    else
      out.emplace_back(key, toml_value_text(v));
  }
}

void read_config(const fs::path& dir, RunData& run) {
  const auto text = read_optional(dir / "config.toml", run);
  if (!text) return;
  run.config_toml = *text;
  try {
    const toml::table t = toml::parse(*text, (dir / "config.toml").string());
    flatten_toml(t, "", run.config);
  } catch (const toml::parse_error& e) {
    run.notices.push_back(fmt::format("config.toml:{}: {}, config table skipped",
                                      e.source().begin.line, e.description()));
  }
}

nlohmann::json read_json_object(const fs::path& p, RunData& run) {
  const auto text = read_optional(p, run);
  if (!text) return nullptr;
  nlohmann::json j = nlohmann::json::parse(*text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    run.notices.push_back(fmt::format("{}: not a JSON object, skipped", p.filename().string()));
    return nullptr;
  }
  return j;
}

double median_of(std::vector<double> v) {
  if (v.empty()) return 0;
  std::nth_element(v.begin(), v.begin() + ptrdiff_t(v.size() / 2), v.end());
  return v[v.size() / 2];
}

}  // namespace

std::string RunData::config_value(const std::string& key) const {
  for (const auto& [k, v] : config)
    if (k == key) return v;
  return "";
}

std::vector<resilience::GoodputStep> RunData::goodput_steps() const {
  std::vector<resilience::GoodputStep> out(step.size());
  const auto it = columns.find("step_seconds");
  for (size_t i = 0; i < step.size(); ++i) {
    out[i].step = step[i];
    out[i].step_seconds = it == columns.end() ? 0.0 : it->second[i];
    out[i].skipped = skipped[i];
  }
  return out;
}

resilience::Goodput RunData::goodput() const {
  std::optional<double> hint;
  if (summary.is_object() && summary.contains("train_seconds") &&
      summary["train_seconds"].is_number())
    hint = summary["train_seconds"].get<double>();
  return resilience::compute_goodput(events, goodput_steps(), hint);
}

RunData read_run(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) fail<IoError>("{}: run directory not found", dir);
  RunData run;
  run.dir = dir;
  fs::path p = fs::path(dir).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  run.name = p.filename().string();
  const fs::path d(dir);
  read_config(d, run);
  read_metrics(d, run);
  read_events(d, run);
  run.summary = read_json_object(d / "summary.json", run);
  {
    std::error_code ec2;
    if (fs::exists(d / kEnvironmentFile, ec2))
      run.environment = read_json_object(d / kEnvironmentFile, run);
    else
      run.notices.push_back(fmt::format(
          "{}: missing, skipped (environment shown from config.toml only)", kEnvironmentFile));
  }

  // Tokens per optimizer step, for the loss-against-tokens chart.
  int64_t world = 1;
  if (run.environment.is_object() && run.environment.contains("world_size") &&
      run.environment["world_size"].is_number_integer())
    world = std::max<int64_t>(1, run.environment["world_size"].get<int64_t>());
  else
    for (const auto& ev : run.events) world = std::max(world, ev.world_size);
  try {
    const std::string b = run.config_value("train.batch_size"),
                      s = run.config_value("train.seq_len");
    std::string a = run.config_value("train.grad_accum");
    if (a.empty()) a = "1";
    if (!b.empty() && !s.empty())
      run.tokens_per_step = std::stod(b) * std::stod(s) * std::stod(a) * double(world);
  } catch (const std::exception&) {
    run.notices.push_back(
        "config.toml: train.batch_size/seq_len/grad_accum not numbers; tokens axis from "
        "throughput");
  }
  const auto tps = run.columns.find("tokens_per_s"), sec = run.columns.find("step_seconds");
  if (run.tokens_per_step <= 0 && tps != run.columns.end() && sec != run.columns.end()) {
    std::vector<double> per;
    for (size_t i = 0; i < run.step.size(); ++i)
      if (std::isfinite(tps->second[i] * sec->second[i]))
        per.push_back(tps->second[i] * sec->second[i]);
    run.tokens_per_step = std::round(median_of(per));
  }
  return run;
}

}  // namespace keel::cli::report
