// `keel launch -n N [--hosts h1,h2 | --hostfile F] [--faults PLAN] -- train ...`:
// runs `keel train ...` as an N-rank world under mpirun and keeps it alive:
// restarts from the newest verified checkpoint after a crash, hang or
// rollback (with backoff, up to resilience.restart_budget) and shrinks the
// world around a rank that keeps failing. See docs/faults.md.
#include <unistd.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "cli/commands/commands.h"
#include "core/error.h"
#include "io/config.h"
#include "resilience/supervisor.h"

namespace keel::cli {

namespace {

struct LaunchArgs {
  int ranks = 1;
  std::string hosts;
  std::string hostfile;
  std::string faults;
  bool no_mpirun = false;
  std::vector<std::string> command;  // after "--": train [--config F] [key=value ...]
};

std::string self_path() {
  std::vector<char> buf(4096);
  const ssize_t n = ::readlink("/proc/self/exe", buf.data(), buf.size() - 1);
  if (n <= 0) fail("keel launch: cannot find the path of this program");
  return std::string(buf.data(), size_t(n));
}

void run_launch(const LaunchArgs& a) {
  if (a.command.empty() || a.command[0] != "train")
    fail<ConfigError>("keel launch: expected the command after '--' to be 'train ...', got '{}'",
                      a.command.empty() ? std::string() : a.command[0]);
  // Read the run's config the way `keel train` will, for run.dir, the
  // accumulation and the [resilience] settings.
  std::string config_file;
  std::vector<std::string> overrides;
  for (size_t i = 1; i < a.command.size(); ++i) {
    const std::string& s = a.command[i];
    if (s == "--config" && i + 1 < a.command.size())
      config_file = a.command[++i];
    else if (s.rfind("--config=", 0) == 0)
      config_file = s.substr(9);
    else if (!s.starts_with("-") && s.find('=') != std::string::npos)
      overrides.push_back(s);
  }
  io::Config cfg = config_file.empty() ? io::default_config() : io::load_config(config_file);
  io::apply_overrides(cfg, overrides);
  io::validate_config(cfg);

  resilience::SupervisorOptions o;
  o.world_size = a.ranks;
  if (!a.hosts.empty()) {
    size_t pos = 0;
    while (pos <= a.hosts.size()) {
      size_t c = a.hosts.find(',', pos);
      if (c == std::string::npos) c = a.hosts.size();
      if (c > pos) o.hosts.push_back(a.hosts.substr(pos, c - pos));
      pos = c + 1;
    }
  }
  o.hostfile = a.hostfile;
  o.program = self_path();
  o.args = a.command;
  o.run_dir = cfg.run.dir;
  o.checkpoint_dir = cfg.checkpoint.dir;
  o.grad_accum = cfg.train.grad_accum;
  o.faults = a.faults.empty() ? cfg.resilience.faults : a.faults;
  o.restart_budget = cfg.resilience.restart_budget;
  o.backoff_s = cfg.resilience.backoff_s;
  o.backoff_max_s = cfg.resilience.backoff_max_s;
  o.exclude_after = cfg.resilience.exclude_after;
  o.use_mpirun = !a.no_mpirun;
  o.heartbeat = cfg.resilience.heartbeat;
  o.heartbeat_opt.dead_after_s = cfg.resilience.heartbeat_dead_s;
  o.heartbeat_opt.hang_factor = cfg.resilience.heartbeat_hang_factor;
  o.heartbeat_opt.hang_floor_s = cfg.resilience.heartbeat_hang_floor_s;
  o.warm_spare = cfg.resilience.heartbeat && cfg.resilience.warm_spare;
  if (cfg.checkpoint.every == 0)
    fmt::print("keel launch: checkpoint.every is 0, so every restart starts from step 0\n");
  const resilience::SupervisorResult r = resilience::run_supervisor(o);
  fmt::print(
      "keel launch: {} after {} restart(s) ({} from a warm spare); final world {} rank(s), "
      "grad_accum {}{}\n",
      r.finished ? "finished" : "gave up", r.restarts, r.spares_used, r.final_world,
      r.final_grad_accum,
      r.excluded.empty() ? "" : fmt::format(", {} rank(s) excluded", r.excluded.size()));
  std::fflush(stdout);
  if (!r.finished) fail("keel launch: the run did not finish (see {}/events.jsonl)", o.run_dir);
}

}  // namespace

void add_launch_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "launch", "Run `keel train` as an N-rank world under mpirun; restart it on failures");
  auto a = std::make_shared<LaunchArgs>();
  cmd->add_option("-n,--ranks", a->ranks, "number of ranks")->check(CLI::PositiveNumber);
  cmd->add_option("--hosts", a->hosts,
                  "comma-separated hosts, one rank each (default: this machine)");
  cmd->add_option("--hostfile", a->hostfile, "mpirun hostfile")->excludes("--hosts");
  cmd->add_option("--faults", a->faults,
                  "fault plan to rehearse: a .toml file or entries like "
                  "'kind=kill,step=30,rank=1;kind=nan,step=60' (docs/faults.md)");
  cmd->add_flag("--no-mpirun", a->no_mpirun,
                "run the single rank directly, without mpirun (requires -n 1)");
  cmd->add_option("command", a->command, "-- train [--config FILE] [key=value ...]")->required();
  cmd->callback([a] {
    if (a->no_mpirun && a->ranks != 1)
      fail<ConfigError>("keel launch: --no-mpirun runs one rank; got -n {}", a->ranks);
    run_launch(*a);
  });
}

}  // namespace keel::cli
