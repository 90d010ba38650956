#include "resilience/fault_plan.h"

#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <toml++/toml.h>

#include "core/error.h"

namespace keel::resilience {

namespace {

constexpr std::pair<FaultKind, std::string_view> kKinds[] = {
    {FaultKind::Kill, "kill"},
    {FaultKind::Hang, "hang"},
    {FaultKind::Nan, "nan"},
    {FaultKind::BitFlip, "bitflip"},
    {FaultKind::Straggler, "straggler"},
    {FaultKind::CorruptCheckpoint, "corrupt_checkpoint"},
    {FaultKind::LossSpike, "loss_spike"},
    {FaultKind::NodeLoss, "node_loss"},
    {FaultKind::KillInSnapshot, "kill_in_snapshot"},
};

constexpr std::string_view kKeys =
    "kind, step, rank, repeat, every_start, target, param, index, bit, where, seconds, after, "
    "magnitude, machines";

// Stores one key's textual value into f; `where` starts the error message.
void set_field(Fault& f, std::string_view key, const std::string& value, const std::string& where,
               bool& has_kind) {
  auto as_int = [&](int64_t lo, int64_t hi) {
    int64_t v = 0;
    const char* end = value.data() + value.size();
    auto r = std::from_chars(value.data(), end, v);
    if (value.empty() || r.ec != std::errc() || r.ptr != end)
      fail<ConfigError>("{}: {}: expected an integer, got \"{}\"", where, key, value);
    if (v < lo || v > hi)
      fail<ConfigError>("{}: {}: must be in [{}, {}], got {}", where, key, lo, hi, v);
    return v;
  };
  auto as_num = [&]() {
    char* end = nullptr;
    const double v = std::strtod(value.c_str(), &end);
    if (value.empty() || end != value.c_str() + value.size() || !std::isfinite(v) || v < 0)
      fail<ConfigError>("{}: {}: expected a non-negative number, got \"{}\"", where, key, value);
    return v;
  };
  if (key == "kind") {
    for (auto& [k, name] : kKinds)
      if (name == value) {
        f.kind = k;
        has_kind = true;
        return;
      }
    fail<ConfigError>(
        "{}: kind: unknown fault \"{}\" (expected kill, hang, nan, bitflip, straggler, "
        "corrupt_checkpoint, loss_spike, node_loss or kill_in_snapshot)",
        where, value);
  } else if (key == "step") {
    f.step = as_int(1, int64_t(1) << 50);
  } else if (key == "rank") {
    f.rank = int(as_int(-1, 1 << 20));
  } else if (key == "repeat") {
    f.repeat = as_int(1, 1 << 20);
  } else if (key == "every_start") {
    if (value != "true" && value != "false")
      fail<ConfigError>("{}: every_start: expected true or false, got \"{}\"", where, value);
    f.every_start = value == "true";
  } else if (key == "target") {
    if (value != "param" && value != "grad" && value != "moment")
      fail<ConfigError>("{}: target: expected \"param\", \"grad\" or \"moment\", got \"{}\"", where,
                        value);
    f.target = value;
  } else if (key == "param") {
    f.param = value;
  } else if (key == "index") {
    f.index = as_int(0, int64_t(1) << 50);
  } else if (key == "bit") {
    f.bit = int(as_int(0, 31));
  } else if (key == "where") {
    if (value != "collective" && value != "kernel" && value != "snapshot")
      fail<ConfigError>(
          "{}: where: expected \"collective\" or \"kernel\" (hang), or \"snapshot\" "
          "(straggler), got \"{}\"",
          where, value);
    f.where = value;
  } else if (key == "seconds") {
    f.seconds = as_num();
  } else if (key == "after") {
    f.after = as_num();
    if (!(f.after >= 0) || f.after > 86400)
      fail<ConfigError>("{}: after: expected seconds in [0, 86400], got {}", where, value);
  } else if (key == "magnitude") {
    f.magnitude = as_num();
  } else if (key == "machines") {
    f.machines = int(as_int(1, 1 << 20));
  } else {
    fail<ConfigError>("{}: unknown key '{}' (expected {})", where, key, kKeys);
  }
}

// The fields that only some kinds read, checked once the whole entry is known.
void check_fault(const Fault& f, const std::string& where) {
  if (f.where == "snapshot" && f.kind != FaultKind::Straggler)
    fail<ConfigError>("{}: where: \"snapshot\" applies to straggler only (this is {})", where,
                      fault_kind_name(f.kind));
  if (f.where == "kernel" && f.kind != FaultKind::Hang)
    fail<ConfigError>("{}: where: \"kernel\" applies to hang only (this is {})", where,
                      fault_kind_name(f.kind));
}

std::string trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\n'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\n'))
    s.remove_suffix(1);
  return std::string(s);
}

}  // namespace

std::string_view fault_kind_name(FaultKind k) {
  for (auto& [kind, name] : kKinds)
    if (kind == k) return name;
  return "?";
}

FaultPlan parse_fault_plan_toml(std::string_view text, const std::string& source) {
  toml::table root;
  try {
    root = toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    fail<ConfigError>("{}:{}: TOML syntax error: {}", source, e.source().begin.line,
                      e.description());
  }
  FaultPlan plan;
  plan.source = source;
  for (auto&& [key, node] : root) {
    const std::string where = fmt::format("{}:{}", source, key.source().begin.line);
    if (key.str() != "fault")
      fail<ConfigError>("{}: unknown key '{}' (a plan holds [[fault]] tables)", where, key.str());
    const toml::array* arr = node.as_array();
    if (!arr || !arr->is_array_of_tables())
      fail<ConfigError>("{}: 'fault' must be an array of tables ([[fault]])", where);
    for (const toml::node& item : *arr) {
      Fault f;
      f.id = int(plan.faults.size());
      bool has_kind = false;
      const std::string fwhere =
          fmt::format("{}:{}: fault {}", source, item.source().begin.line, f.id);
      for (auto&& [k, v] : *item.as_table()) {
        const std::string kwhere =
            fmt::format("{}:{}: fault {}", source, k.source().begin.line, f.id);
        std::string value;
        if (auto s = v.value_exact<std::string>())
          value = *s;
        else if (auto i = v.value_exact<int64_t>())
          value = std::to_string(*i);
        else if (auto d = v.value_exact<double>())
          value = fmt::format("{}", *d);
        else if (auto b = v.value_exact<bool>())
          value = *b ? "true" : "false";
        else
          fail<ConfigError>("{}: {}: expected a string, number or boolean", kwhere, k.str());
        set_field(f, k.str(), value, kwhere, has_kind);
      }
      if (!has_kind) fail<ConfigError>("{}: missing 'kind'", fwhere);
      check_fault(f, fwhere);
      plan.faults.push_back(f);
    }
  }
  return plan;
}

FaultPlan parse_fault_plan_entries(std::string_view entries) {
  FaultPlan plan;
  plan.source = fmt::format("--faults '{}'", entries);
  size_t pos = 0;
  while (pos <= entries.size()) {
    size_t semi = entries.find(';', pos);
    if (semi == std::string_view::npos) semi = entries.size();
    const std::string entry = trim(entries.substr(pos, semi - pos));
    pos = semi + 1;
    if (entry.empty()) continue;
    Fault f;
    f.id = int(plan.faults.size());
    bool has_kind = false;
    const std::string where = fmt::format("fault entry '{}'", entry);
    std::stringstream ss(entry);
    std::string kv;
    while (std::getline(ss, kv, ',')) {
      const std::string t = trim(kv);
      if (t.empty()) continue;
      const size_t eq = t.find('=');
      if (eq == std::string::npos) fail<ConfigError>("{}: expected key=value, got '{}'", where, t);
      set_field(f, trim(t.substr(0, eq)), trim(t.substr(eq + 1)), where, has_kind);
    }
    if (!has_kind) fail<ConfigError>("{}: missing 'kind'", where);
    check_fault(f, where);
    plan.faults.push_back(f);
  }
  return plan;
}

FaultPlan load_fault_plan(const std::string& spec) {
  if (spec.empty()) return {};
  // A long plan of entries is no path: asked as one, the file system throws
  // "File name too long", so the question goes through an error code.
  std::error_code ec;
  const bool is_file = std::filesystem::is_regular_file(spec, ec) ||
                       (spec.size() > 5 && spec.substr(spec.size() - 5) == ".toml");
  if (!is_file) return parse_fault_plan_entries(spec);
  std::ifstream in(spec, std::ios::binary);
  if (!in) fail<ConfigError>("{}: cannot read fault plan", spec);
  std::ostringstream ss;
  ss << in.rdbuf();
  return parse_fault_plan_toml(ss.str(), spec);
}

}  // namespace keel::resilience
