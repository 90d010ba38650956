// `keel plan`: the expected goodput of a cluster (chips, failure rate, step
// time, snapshot / checkpoint / restart costs), the intervals that maximise
// it, steps lost per day, a seeded simulation of the same cluster
// (--simulate), inputs taken from a measured run (--from-run), and for slow
// links what DiLoCo's H does to communication time.
#include <algorithm>
#include <cmath>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/commands/commands.h"
#include "cli/commands/report_run.h"
#include "core/error.h"
#include "resilience/goodput_model.h"

namespace keel::cli {

namespace {

struct PlanArgs {
  std::optional<int64_t> chips, snapshot_every, checkpoint_every, steps;
  std::optional<double> mtbf_hours, step_s, restart_s, startup_s, snapshot_s, checkpoint_s;
  std::optional<double> snapshot_loss;
  std::string failure_log, from_run;
  bool simulate = false, json = false;
  int runs = 200;
  uint64_t seed = 1;
  std::optional<double> link_gbps, grad_bytes;
  std::vector<int64_t> diloco_h = {1, 8, 32, 128};
};

// What a measured run says about each input (unset: it does not say).
struct RunInputs {
  std::optional<int64_t> chips, checkpoint_every, snapshot_every, steps;
  std::optional<double> step_s, restart_s, startup_s, checkpoint_s, snapshot_s, mtbf_chip_s;
  std::vector<std::string> notes;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

RunInputs read_run_inputs(const std::string& dir) {
  const report::RunData run = report::read_run(dir);
  RunInputs in;
  const auto col = run.columns.find("step_seconds");
  if (col == run.columns.end() || run.step.empty())
    fail("plan --from-run {}: metrics.jsonl has no step_seconds", dir);
  // The mean, not the median: productive time is the sum of the steps.
  std::vector<double> steps;
  for (size_t i = 0; i < col->second.size(); ++i)
    if (!run.skipped[i] && std::isfinite(col->second[i])) steps.push_back(col->second[i]);
  if (steps.empty()) fail("plan --from-run {}: metrics.jsonl has no timed step", dir);
  double sum = 0;
  for (double x : steps) sum += x;
  in.step_s = sum / double(steps.size());
  // Seconds of steps (and of their snapshot stalls) recorded for steps in (a, b].
  const auto snap_col = run.columns.find("snapshot_stall_s");
  const auto recorded = [&](int64_t a, int64_t b) {
    double t = 0;
    for (size_t i = 0; i < run.step.size(); ++i) {
      if (run.step[i] <= a || run.step[i] > b) continue;
      if (std::isfinite(col->second[i])) t += col->second[i];
      if (snap_col != run.columns.end() && std::isfinite(snap_col->second[i]))
        t += snap_col->second[i];
    }
    return t;
  };
  const resilience::Goodput g = run.goodput();
  in.steps = g.final_step;
  if (const std::string e = run.config_value("checkpoint.every"); !e.empty())
    in.checkpoint_every = std::stoll(e);
  // In-memory snapshots: their interval, and the stall each step records.
  if (const std::string e = run.config_value("resilience.snapshot_every"); !e.empty())
    in.snapshot_every = std::stoll(e);
  if (const auto sc = run.columns.find("snapshot_stall_s");
      in.snapshot_every.value_or(0) > 0 && sc != run.columns.end()) {
    std::vector<double> v;
    for (double x : sc->second)
      if (std::isfinite(x)) v.push_back(x);
    double t = 0;
    for (double x : v) t += x;
    if (!v.empty()) in.snapshot_s = t / double(v.size());
  }
  int64_t world = 0;
  for (const auto& e : run.events) world = std::max(world, e.world_size);
  if (world > 0) in.chips = world;
  // Checkpoint stall: the time between consecutive checkpoints k steps
  // apart, less the steps and snapshot stalls recorded between them (what
  // is left is the save and the loop's own bookkeeping); the median, so a
  // restart between them does not count.
  std::vector<double> stalls;
  const resilience::GoodputEvent* prev = nullptr;
  for (const auto& e : run.events) {
    if (e.event == "fault" || e.event == "restart") prev = nullptr;
    if (e.event != "checkpoint") continue;
    if (prev && in.checkpoint_every && e.step - prev->step == *in.checkpoint_every)
      stalls.push_back(std::max(0.0, e.time - prev->time - recorded(prev->step, e.step)));
    prev = &e;
  }
  if (!stalls.empty()) in.checkpoint_s = median(stalls);
  // Start-up: from the first start to the first checkpoint, less its
  // recorded steps and snapshot stalls and a checkpoint's stall.
  const auto first = std::find_if(run.events.begin(), run.events.end(),
                                  [](const auto& e) { return e.event == "start"; });
  const auto ck = std::find_if(run.events.begin(), run.events.end(),
                               [](const auto& e) { return e.event == "checkpoint"; });
  if (first != run.events.end() && ck != run.events.end() && ck->step > 0)
    in.startup_s = std::max(
        0.0, ck->time - first->time - recorded(0, ck->step) - in.checkpoint_s.value_or(0.0));
  // Restart: each fault's injection (or detection) to the next resume.
  std::vector<double> restarts;
  int64_t faults = 0;
  for (size_t i = 0; i < run.events.size(); ++i) {
    const auto& e = run.events[i];
    if (e.event != "fault") continue;
    ++faults;
    double from = e.time;
    for (size_t j = i; j-- > 0;)
      if (run.events[j].event == "inject") {
        from = run.events[j].time;
        break;
      } else if (run.events[j].event == "resume" || run.events[j].event == "fault") {
        break;
      }
    for (size_t j = i + 1; j < run.events.size(); ++j)
      if (run.events[j].event == "resume") {
        restarts.push_back(run.events[j].time - from);
        break;
      }
  }
  if (!restarts.empty()) {
    double s = 0;
    for (double r : restarts) s += r;
    in.restart_s = s / double(restarts.size());
  }
  if (faults > 0 && g.wall_s > 0)
    in.mtbf_chip_s = g.wall_s * double(in.chips.value_or(1)) / double(faults);
  in.notes.push_back(
      fmt::format("from {}: {} steps of mean {:.4f} s, {} chip(s), {} fault(s) over {:.1f} s", dir,
                  g.final_step, *in.step_s, in.chips.value_or(1), faults, g.wall_s));
  return in;
}

// Failure times in hours since the log's start, one per line ('#' comments).
double mtbf_from_log(const std::string& path, int64_t chips) {
  std::ifstream f(path);
  if (!f) fail<IoError>("plan: cannot read failure log {}", path);
  std::string line;
  int64_t n = 0, lineno = 0;
  double last = 0;
  while (std::getline(f, line)) {
    ++lineno;
    const auto b = line.find_first_not_of(" \t\r");
    if (b == std::string::npos || line[b] == '#') continue;
    size_t used = 0;
    double h = 0;
    try {
      h = std::stod(line.substr(b), &used);
    } catch (const std::exception&) {
      fail<IoError>("{}:{}: expected a failure time in hours, got '{}'", path, lineno, line);
    }
    if (!(h >= last) || !std::isfinite(h))
      fail<IoError>("{}:{}: failure times must be ascending hours >= 0, got {}", path, lineno, h);
    last = h, ++n;
  }
  if (n == 0 || last <= 0)
    fail<IoError>("{}: no failure times (hours since the start, ascending)", path);
  return last * 3600.0 * double(chips) / double(n);
}

std::string duration(double s) {
  if (s < 120) return fmt::format("{:.1f} s", s);
  if (s < 7200) return fmt::format("{:.1f} min", s / 60);
  if (s < 2 * 86400) return fmt::format("{:.1f} h", s / 3600);
  if (s < 2 * 365 * 86400.0) return fmt::format("{:.1f} days", s / 86400);
  return fmt::format("{:.1f} years", s / (365.25 * 86400));
}

template <class T>
T need(const std::optional<T>& v, const char* flag) {
  if (!v) fail<ConfigError>("plan: {} is required (or --from-run a run that measured it)", flag);
  return *v;
}

void run_plan(const PlanArgs& a) {
  RunInputs r;
  if (!a.from_run.empty()) r = read_run_inputs(a.from_run);
  resilience::ClusterModel m;
  m.chips = a.chips.value_or(r.chips.value_or(1));
  if (a.mtbf_hours && !a.failure_log.empty())
    fail<ConfigError>("plan: give --mtbf-hours or --failure-log, not both");
  if (a.mtbf_hours)
    m.mtbf_chip_s = *a.mtbf_hours * 3600.0;
  else if (!a.failure_log.empty())
    m.mtbf_chip_s = mtbf_from_log(a.failure_log, m.chips);
  else
    m.mtbf_chip_s = need(r.mtbf_chip_s, "--mtbf-hours or --failure-log");
  m.step_s = a.step_s ? *a.step_s : need(r.step_s, "--step-s");
  m.restart_s = a.restart_s ? *a.restart_s : need(r.restart_s, "--restart-s");
  m.startup_s = a.startup_s.value_or(r.startup_s.value_or(0.0));
  m.checkpoint_s = a.checkpoint_s ? *a.checkpoint_s : need(r.checkpoint_s, "--checkpoint-s");
  m.snapshot_s = a.snapshot_s.value_or(r.snapshot_s.value_or(0.0));
  m.steps = a.steps.value_or(r.steps.value_or(0));
  if (a.snapshot_loss) m.snapshot_loss = *a.snapshot_loss;
  // Intervals not given are the model's best (a run's checkpoint interval stands).
  m.snapshot_every =
      a.snapshot_every.value_or(r.snapshot_every.value_or(a.snapshot_s || r.snapshot_s ? 1 : 0));
  m.checkpoint_every = a.checkpoint_every.value_or(r.checkpoint_every.value_or(1));
  const resilience::IntervalChoice best = best_intervals(m);
  if (!a.checkpoint_every && !r.checkpoint_every) m.checkpoint_every = best.best_checkpoint;
  if (!a.snapshot_every && !r.snapshot_every && a.snapshot_s) m.snapshot_every = best.best_snapshot;
  const resilience::GoodputTerms g = resilience::predict_goodput(m);
  std::optional<resilience::SimulationResult> sim;
  if (a.simulate) sim = resilience::simulate_goodput(m, a.runs, a.seed);

  nlohmann::ordered_json j;
  j["chips"] = m.chips;
  j["mtbf_chip_hours"] = m.mtbf_chip_s / 3600.0;
  j["failures_per_day"] = g.failures_per_day;
  j["step_s"] = m.step_s;
  j["restart_s"] = m.restart_s;
  j["startup_s"] = m.startup_s;
  j["snapshot_s"] = m.snapshot_s;
  j["snapshot_every"] = m.snapshot_every;
  j["checkpoint_s"] = m.checkpoint_s;
  j["checkpoint_every"] = m.checkpoint_every;
  j["steps"] = m.steps;
  j["snapshot_loss_share"] = m.snapshot_loss_share();
  j["goodput"] = g.goodput;
  j["lost"] = {{"snapshots", g.snapshots}, {"checkpoints", g.checkpoints},
               {"restarts", g.restarts},   {"rework", g.rework},
               {"startup", g.startup},     {"dominant", g.dominant()}};
  j["steps_lost_per_failure"] = g.steps_lost_per_failure;
  j["steps_lost_per_day"] = g.steps_lost_per_day;
  j["young_daly"] = {{"snapshot_every", best.young_daly_snapshot},
                     {"checkpoint_every", best.young_daly_checkpoint}};
  j["optimum"] = {{"snapshot_every", best.best_snapshot},
                  {"checkpoint_every", best.best_checkpoint},
                  {"goodput", best.best_goodput}};
  if (sim)
    j["simulation"] = {{"runs", a.runs},
                       {"seed", a.seed},
                       {"mean", sim->mean},
                       {"p05", sim->p05},
                       {"p50", sim->p50},
                       {"p95", sim->p95},
                       {"failures", sim->mean_failures},
                       {"steps_lost_per_failure", sim->mean_steps_lost_per_failure}};
  nlohmann::ordered_json links = nlohmann::ordered_json::array();
  if (a.link_gbps || a.grad_bytes) {
    const double bw = need(a.link_gbps, "--link-gbps") * 1e9 / 8.0;
    const double bytes = need(a.grad_bytes, "--grad-bytes");
    // A ring all-reduce moves 2 (n - 1) / n of the gradient through each link.
    const double n = double(m.chips);
    const double ar = m.chips > 1 ? 2.0 * (n - 1.0) / n * bytes / bw : 0.0;
    for (int64_t h : a.diloco_h) {
      if (h < 1) fail<ConfigError>("plan: --diloco-h values must be >= 1, got {}", h);
      const double comm = ar / double(h), step = m.step_s + comm;
      // Validation-loss cost measured on the tiny config (docs/distributed.md).
      const std::string loss = h == 1    ? "none (plain data parallelism)"
                               : h == 32 ? "+1.05% (int4 pseudo-gradients, 48-step warm-up)"
                                         : "not measured (H = 32: +1.05%)";
      links.push_back({{"H", h},
                       {"comm_s_per_step", comm},
                       {"comm_share", comm / step},
                       {"step_s_with_comm", step},
                       {"expected_loss_cost", loss}});
    }
    j["links"] = links;
  }
  if (a.json) {
    fmt::print("{}\n", j.dump());
    return;
  }
  for (const auto& n : r.notes) fmt::print("{}\n", n);
  const double sys = m.mtbf_chip_s / double(m.chips);
  fmt::print("cluster: {} chip(s), MTBF {} per chip: one failure every {} ({:.2f} per day)\n",
             m.chips, duration(m.mtbf_chip_s), duration(sys), g.failures_per_day);
  fmt::print("step {:.4f} s; restart {:.2f} s; start-up {:.2f} s; ", m.step_s, m.restart_s,
             m.startup_s);
  if (m.snapshot_every > 0)
    fmt::print("snapshot {:.3f} s every {} step(s) ({:.1f}% of failures lose the copies); ",
               m.snapshot_s, m.snapshot_every, 100 * m.snapshot_loss_share());
  else
    fmt::print("no in-memory snapshots; ");
  fmt::print("checkpoint {:.3f} s every {} steps{}\n", m.checkpoint_s, m.checkpoint_every,
             m.steps > 0 ? fmt::format("; run of {} steps", m.steps) : "");
  fmt::print(
      "expected goodput {:.4f}; lost to snapshots {:.2f}%, checkpoints {:.2f}%, restarts "
      "{:.2f}%, rework {:.2f}%, start-up {:.2f}% (largest: {})\n",
      g.goodput, 100 * g.snapshots, 100 * g.checkpoints, 100 * g.restarts, 100 * g.rework,
      100 * g.startup, g.dominant());
  fmt::print("steps lost per failure {:.2f}, per day {:.1f}\n", g.steps_lost_per_failure,
             g.steps_lost_per_day);
  fmt::print(
      "intervals: Young-Daly {}checkpoint every {} steps; the model's optimum {}checkpoint "
      "every {} steps -> goodput {:.4f}\n",
      m.snapshot_every > 0 ? fmt::format("snapshot every {}, ", best.young_daly_snapshot) : "",
      best.young_daly_checkpoint,
      m.snapshot_every > 0 ? fmt::format("snapshot every {}, ", best.best_snapshot) : "",
      best.best_checkpoint, best.best_goodput);
  if (sim)
    fmt::print(
        "simulation ({} runs of {} steps, seed {}): goodput mean {:.4f}, p5 {:.4f}, p50 {:.4f}, "
        "p95 {:.4f}; {:.1f} failures per run, {:.2f} steps lost per failure\n",
        a.runs, m.steps, a.seed, sim->mean, sim->p05, sim->p50, sim->p95, sim->mean_failures,
        sim->mean_steps_lost_per_failure);
  for (const auto& l : links)
    fmt::print(
        "links: DiLoCo H = {:>4}: {:.3f} s of all-reduce per step ({:.1f}% of a step), "
        "loss cost {}\n",
        l["H"].get<int64_t>(), l["comm_s_per_step"].get<double>(),
        100 * l["comm_share"].get<double>(), l["expected_loss_cost"].get<std::string>());
}

}  // namespace

void add_plan_command(CLI::App& app) {
  auto a = std::make_shared<PlanArgs>();
  auto* cmd = app.add_subcommand(
      "plan",
      "Expected goodput of a cluster under failures, the best snapshot and checkpoint "
      "intervals, and a simulation of it");
  const auto opt = [&](auto& field, const char* name, const char* help) {
    cmd->add_option_function<std::decay_t<decltype(*field)>>(
        name, [&field](const auto& v) { field = v; }, help);
  };
  opt(a->chips, "--chips", "Chips (ranks) in the job");
  opt(a->mtbf_hours, "--mtbf-hours", "Mean time between failures of one chip, hours");
  cmd->add_option("--failure-log", a->failure_log,
                  "File of failure times (hours since the start, one per line) of --chips chips");
  opt(a->step_s, "--step-s", "Seconds per training step");
  opt(a->restart_s, "--restart-s", "Seconds per failure: detection, new world, state load");
  opt(a->startup_s, "--startup-s", "Seconds of start-up, once per run");
  opt(a->snapshot_s, "--snapshot-s", "Stall per in-memory snapshot, seconds (enables snapshots)");
  opt(a->snapshot_every, "--snapshot-every", "Steps between snapshots (default: the best)");
  opt(a->checkpoint_s, "--checkpoint-s", "Stall per disk checkpoint, seconds");
  opt(a->checkpoint_every, "--checkpoint-every", "Steps between checkpoints (default: the best)");
  opt(a->snapshot_loss, "--snapshot-loss",
      "Share of failures that also lose the snapshot copies (default: a buddy failing within a "
      "restart)");
  opt(a->steps, "--steps", "Run length in steps (start-up counts once; 0: steady state)");
  cmd->add_option("--from-run", a->from_run,
                  "Take step time, chips, checkpoint interval and cost, start-up, restart cost and "
                  "failure rate from a run directory (flags override)");
  cmd->add_flag("--simulate", a->simulate, "Also run the seeded discrete-event simulation");
  cmd->add_option("--runs", a->runs, "Simulated runs")->check(CLI::Range(1, 100000));
  cmd->add_option("--seed", a->seed, "Simulation seed");
  opt(a->link_gbps, "--link-gbps", "Link bandwidth per chip, Gbit/s (slow links)");
  opt(a->grad_bytes, "--grad-bytes", "Bytes of gradient all-reduced per step");
  cmd->add_option("--diloco-h", a->diloco_h, "DiLoCo local steps to compare")->delimiter(',');
  cmd->add_flag("--json", a->json, "One JSON object");
  cmd->callback([a] { run_plan(*a); });
}

}  // namespace keel::cli
