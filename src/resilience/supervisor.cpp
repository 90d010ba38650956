#include "resilience/supervisor.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cstdlib>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <regex>
#include <thread>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "core/error.h"
#include "core/log.h"
#include "io/atomic_file.h"
#include "resilience/checkpoint_checksum.h"
#include "resilience/checkpoint_manifest.h"
#include "resilience/checkpoint_retention.h"
#include "resilience/exit_codes.h"
#include "resilience/snapshot_store.h"

extern char** environ;

namespace keel::resilience {

namespace fs = std::filesystem;

namespace {

std::atomic<pid_t> g_child{0}, g_spare{0};

// Ctrl-C or a scheduler's SIGTERM on `keel launch` goes to the world too, and
// ends a waiting spare.
void forward_signal(int sig) {
  const pid_t p = g_child.load();
  if (p > 0) ::kill(p, sig);
  const pid_t q = g_spare.load();
  if (q > 0) ::kill(q, SIGKILL);
  ::signal(sig, SIG_DFL);
  ::raise(sig);
}

// One world: mpirun (or the single rank) with its output in a pipe.
struct WorldRun {
  pid_t pid = 0;
  int out_fd = -1;
  uint64_t id = 0;
  bool echo = false;
  int wait_status = 0;
  std::string output;  // the last 64 KiB of the world's stdout+stderr
  double started = 0, ended = 0;
};

// Starts argv with stdout+stderr into a pipe and `env` added to this
// process's environment.
WorldRun spawn_world(const std::vector<std::string>& argv,
                     const std::vector<std::pair<std::string, std::string>>& env, uint64_t id,
                     bool echo) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) fail("keel launch: pipe: {}", std::strerror(errno));
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, fds[1], 1);
  posix_spawn_file_actions_adddup2(&fa, fds[1], 2);
  std::vector<char*> cargv;
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);
  std::vector<std::string> envs;
  for (char** e = environ; *e; ++e) {
    const std::string v = *e;
    const bool replaced = std::any_of(
        env.begin(), env.end(), [&](const auto& kv) { return v.starts_with(kv.first + "="); });
    if (!replaced) envs.push_back(v);
  }
  for (const auto& [k, v] : env) envs.push_back(k + "=" + v);
  std::vector<char*> cenv;
  for (auto& e : envs) cenv.push_back(e.data());
  cenv.push_back(nullptr);
  WorldRun r;
  r.id = id;
  r.echo = echo;
  r.started = unix_now();
  const int rc = ::posix_spawnp(&r.pid, cargv[0], &fa, nullptr, cargv.data(), cenv.data());
  posix_spawn_file_actions_destroy(&fa);
  ::close(fds[1]);
  if (rc != 0) {
    ::close(fds[0]);
    fail("keel launch: cannot start {}: {}", argv[0], std::strerror(rc));
  }
  ::fcntl(fds[0], F_SETFL, ::fcntl(fds[0], F_GETFL) | O_NONBLOCK);
  r.out_fd = fds[0];
  return r;
}

// Reads what the world has written; false once its output is closed.
bool pump_output(WorldRun& r) {
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(r.out_fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return true;
    if (n <= 0) return false;
    if (r.echo) {
      std::fwrite(buf, 1, size_t(n), stdout);
      std::fflush(stdout);
    }
    r.output.append(buf, size_t(n));
    if (r.output.size() > (128u << 10)) r.output.erase(0, r.output.size() - (64u << 10));
  }
}

// Waits for the world's process to end (its output closed first).
void reap_world(WorldRun& r) {
  while (pump_output(r)) {
    pollfd p{r.out_fd, POLLIN, 0};
    ::poll(&p, 1, 100);
  }
  ::close(r.out_fd);
  r.out_fd = -1;
  while (::waitpid(r.pid, &r.wait_status, 0) < 0 && errno == EINTR) {
  }
  r.ended = unix_now();
}

// Ends a world now: SIGTERM to its ranks on this host (each finishes a
// checkpoint write in flight, then dies; a stopped one gets SIGKILL), then
// SIGKILL to mpirun, which would otherwise sit out its own teardown timeout.
void end_world(WorldRun& r, const std::vector<pid_t>& ranks) {
  for (pid_t p : ranks) ::kill(p, process_state(p) == 'T' ? SIGKILL : SIGTERM);
  const double t0 = unix_now();
  for (;;) {
    const bool any = std::any_of(ranks.begin(), ranks.end(), process_alive);
    if (!any) break;
    if (unix_now() - t0 > 60) {
      for (pid_t p : ranks) ::kill(p, SIGKILL);
      break;
    }
    pump_output(r);
    ::usleep(5000);
  }
  ::kill(r.pid, SIGKILL);
}

std::string describe_status(int st) {
  if (WIFEXITED(st))
    return fmt::format("exit code {} ({})", WEXITSTATUS(st), exit_code_name(WEXITSTATUS(st)));
  if (WIFSIGNALED(st)) return fmt::format("killed by signal {}", WTERMSIG(st));
  return "ended";
}

}  // namespace

int64_t elastic_grad_accum(int world0, int64_t accum0, int world) {
  const int64_t global = int64_t(world0) * accum0;
  if (world < 1 || global % world != 0) return 0;
  return global / world;
}

std::vector<std::string> world_command(const SupervisorOptions& o, int world, int64_t grad_accum,
                                       const std::vector<std::string>& hosts, bool restart) {
  std::vector<std::string> cmd;
  if (o.use_mpirun) {
    cmd = {o.mpirun, "-n", std::to_string(world)};
    if (::geteuid() == 0) cmd.push_back("--allow-run-as-root");
    // Ranks are single-threaded by default; let the OS place them, and allow
    // more ranks than cores on a small machine.
    cmd.insert(cmd.end(), {"--oversubscribe", "--bind-to", "none"});
    // When a rank dies mpirun SIGTERMs the others and SIGKILLs them this
    // many seconds later (1 by default); rank 0 uses the time to finish a
    // checkpoint write in flight (async_checkpointer.cpp). mpirun waits it
    // out on every teardown, even when every rank is gone, so it stays short.
    cmd.insert(cmd.end(), {"--mca", "odls_base_sigkill_timeout", "2"});
    // A world on this machine alone talks through shared memory (ob1 over
    // vader), which OpenMPI picks anyway, but only after probing UCX's
    // network devices: about 0.2 s of every world's start (and of every
    // restart). Worlds across hosts, or a user's own choice, keep the probe.
    const bool pml_chosen =
        std::getenv("OMPI_MCA_pml") != nullptr ||
        std::find(o.mpirun_args.begin(), o.mpirun_args.end(), "pml") != o.mpirun_args.end();
    if (hosts.empty() && o.hostfile.empty() && !pml_chosen)
      cmd.insert(cmd.end(), {"--mca", "pml", "ob1"});
    // The heartbeat's address and the world's identity reach ranks on other
    // hosts too.
    if (o.heartbeat)
      for (const char* v : {kHeartbeatEnv, kWorldIdEnv, kSpareEnv, kSupervisorPidEnv})
        cmd.insert(cmd.end(), {"-x", v});
    if (!hosts.empty()) {
      std::string h;
      for (const auto& x : hosts) h += (h.empty() ? "" : ",") + x;
      cmd.insert(cmd.end(), {"--host", h});
    } else if (!o.hostfile.empty()) {
      cmd.insert(cmd.end(), {"--hostfile", o.hostfile});
    }
    cmd.insert(cmd.end(), o.mpirun_args.begin(), o.mpirun_args.end());
  }
  cmd.push_back(o.program);
  for (const auto& a : o.args) {
    // --no-resume asks for a fresh run once: the first world moves the old
    // checkpoints aside before its first step, and a restarted world must
    // resume from the ones it wrote, not throw that progress away again.
    if (restart && a == "--no-resume") continue;
    cmd.push_back(a);
  }
  // Later overrides win, so these are appended after the user's.
  cmd.push_back(fmt::format("train.grad_accum={}", grad_accum));
  if (!o.faults.empty()) cmd.push_back(fmt::format("resilience.faults={}", o.faults));
  return cmd;
}

int blamed_rank_from_output(const std::string& output) {
  static const std::regex kPatterns[] = {
      std::regex(R"(process rank (\d+) with PID)"),
      std::regex(R"(Process name: \[\[\d+,\d+\],(\d+)\])"),
      std::regex(R"(rank (\d+) (?:exited|died))"),
  };
  for (const auto& re : kPatterns) {
    std::smatch m;
    if (std::regex_search(output, m, re)) return std::stoi(m[1].str());
  }
  return -1;
}

WorldFailure classify_failure(const std::vector<Event>& world_events, const std::string& output,
                              int wait_status) {
  WorldFailure f;
  for (const Event& e : world_events) {
    if (e.event == "rollback") f.rank_wrote_rollback = true;
    if (e.event == "fault" && !e.detector.empty() && e.detector != "checkpoint_corrupt" &&
        !f.rank_wrote_fault) {
      f.rank_wrote_fault = true;
      f.detector = e.detector;
      f.rank = e.rank;
      f.step = e.step;
      f.detail = e.detail;
    }
  }
  // A NaN that only skipped its update is not what ended the world.
  if (f.rank_wrote_fault && f.detector == "nan" && !f.rank_wrote_rollback) {
    f = WorldFailure{};
    for (const Event& e : world_events) {
      if (e.event == "fault" && !e.detector.empty() && e.detector != "nan" &&
          e.detector != "checkpoint_corrupt") {
        f.rank_wrote_fault = true;
        f.detector = e.detector;
        f.rank = e.rank;
        f.step = e.step;
        f.detail = e.detail;
        break;
      }
    }
  }
  if (!f.rank_wrote_fault) {
    f.detector = "crash";
    f.rank = blamed_rank_from_output(output);
    f.detail = fmt::format("the world ended with {}{}", describe_status(wait_status),
                           f.rank >= 0 ? fmt::format("; mpirun blames rank {}", f.rank) : "");
  }
  return f;
}

int64_t newest_intact_checkpoint_step(const std::string& root) {
  std::vector<int64_t> steps = list_checkpoint_steps(root);
  std::sort(steps.rbegin(), steps.rend());
  for (int64_t s : steps) {
    const fs::path dir = fs::path(root) / checkpoint_dir_name(s);
    try {
      const std::string mpath = (dir / kCheckpointManifestFile).string();
      const CheckpointManifest m = parse_manifest(io::read_file_bytes(mpath), mpath);
      bool ok = true;
      for (const auto& f : m.files) {
        const FileChecksum c = checksum_file((dir / f.name).string());
        ok = ok && c.bytes == f.bytes && c.xxh3 == f.xxh3;
      }
      if (ok) return m.step;
    } catch (const Error&) {
      // Damaged: the ranks will skip it too and try the next older one.
    }
  }
  return 0;
}

int64_t last_metrics_step(const std::string& path) {
  std::ifstream in(path);
  std::string line, last;
  while (std::getline(in, line))
    if (!line.empty() && line.back() == '}') last = line;
  if (last.empty()) return 0;
  try {
    return nlohmann::json::parse(last).value("step", int64_t(0));
  } catch (const nlohmann::json::exception&) {
    return 0;
  }
}

SupervisorResult run_supervisor(const SupervisorOptions& o) {
  if (o.world_size < 1) fail<ConfigError>("keel launch: -n must be >= 1, got {}", o.world_size);
  if (!o.hosts.empty() && int(o.hosts.size()) != o.world_size)
    fail<ConfigError>("keel launch: --hosts lists {} hosts for -n {} (one rank per host)",
                      o.hosts.size(), o.world_size);
  io::make_dirs(o.run_dir);
  EventsLog events((fs::path(o.run_dir) / kEventsFile).string());
  const std::string metrics = (fs::path(o.run_dir) / "metrics.jsonl").string();
  const std::string ckpt_root =
      o.checkpoint_dir.empty() ? (fs::path(o.run_dir) / "checkpoints").string() : o.checkpoint_dir;
  ::signal(SIGINT, forward_signal);
  ::signal(SIGTERM, forward_signal);

  SupervisorResult res;
  int world = o.world_size;
  int64_t accum = o.grad_accum;
  std::vector<std::string> hosts = o.hosts;
  std::vector<int> blame_streak(size_t(world), 0);  // consecutive failures per rank
  int64_t failures_without_progress = 0, last_ckpt = newest_intact_checkpoint_step(ckpt_root);
  double restart_time_lost = 0;
  {
    Event e;
    e.event = "start";
    e.world_size = world;
    e.step = last_ckpt;
    e.detail = fmt::format("keel launch: {} rank(s), grad_accum {}", world, accum);
    e.extra = {{"source", "supervisor"}};
    events.append(e);
  }
  std::unique_ptr<HeartbeatMonitor> monitor;
  if (o.heartbeat) monitor = std::make_unique<HeartbeatMonitor>(o.heartbeat_opt, !hosts.empty());
  uint64_t next_id = 1;
  const auto world_env = [&](uint64_t id, bool spare) {
    std::vector<std::pair<std::string, std::string>> env;
    if (monitor)
      env = {{kHeartbeatEnv, monitor->address()},
             {kWorldIdEnv, std::to_string(id)},
             {kSpareEnv, spare ? "1" : "0"},
             {kSupervisorPidEnv, std::to_string(::getpid())}};
    return env;
  };
  // The warm spare and the layout it was started for.
  std::optional<WorldRun> spare;
  int spare_world = 0;
  int64_t spare_accum = 0;
  int spare_failures = 0;
  const auto drop_spare = [&] {
    if (!spare) return;
    end_world(*spare, monitor->local_pids(spare->id));
    reap_world(*spare);
    monitor->forget(spare->id);
    spare.reset();
    g_spare = 0;
  };
  for (;;) {
    const auto cmd = world_command(o, world, accum, hosts, /*restart=*/res.restarts > 0);
    const size_t events_before = read_events(events.path()).size();
    WorldRun run;
    // A spare still starting is further along than a cold start: wait for it.
    // One with a stopped process is dropped, ready or not: a stopped rank
    // never gets ready (nothing else would end this wait before its 600 s
    // bound; a rank that dies ends mpirun), and one that got ready and was
    // then stopped (its node frozen with the world's rank on it) still reads
    // as ready from its last beats: released, it would hang at once and take
    // a second failure, and an exclusion, on the rank that froze.
    while (spare && spare_world == world && spare_accum == accum) {
      const std::optional<pid_t> stopped = HeartbeatMonitor::stopped_child(spare->pid);
      if (!stopped && monitor->spare_ready(spare->id, world)) break;
      if (!stopped) {
        pollfd p[2] = {{monitor->fd(), POLLIN, 0}, {spare->out_fd, POLLIN, 0}};
        ::poll(p, 2, 20);
        monitor->receive(unix_now());
      }
      if (stopped || !pump_output(*spare) || unix_now() - spare->started > 600) {
        log().warn("keel launch: the warm spare world {}; starting cold",
                   stopped ? fmt::format("has a stopped process ({})", *stopped)
                           : std::string("did not get ready"));
        drop_spare();
        ++spare_failures;
      }
    }
    if (spare && spare_world == world && spare_accum == accum &&
        monitor->spare_ready(spare->id, world)) {
      log().info("keel launch: releasing the warm spare world ({} rank(s))", world);
      run = std::move(*spare);
      spare.reset();
      g_spare = 0;
      monitor->release(run.id);
      run.echo = o.echo;
      if (run.echo) {
        std::fwrite(run.output.data(), 1, run.output.size(), stdout);
        std::fflush(stdout);
      }
      ++res.spares_used;
    } else {
      drop_spare();  // not ready yet, or for another layout
      log().info("keel launch: starting {} rank(s): {}", world, fmt::join(cmd, " "));
      run = spawn_world(cmd, world_env(next_id, false), next_id, o.echo);
      ++next_id;
    }
    g_child = run.pid;
    std::optional<HeartbeatVerdict> verdict;
    double ranks_gone_since = 0;
    for (;;) {
      std::vector<pollfd> p = {{run.out_fd, POLLIN, 0}};
      if (monitor) p.push_back({monitor->fd(), POLLIN, 0});
      if (spare) p.push_back({spare->out_fd, POLLIN, 0});
      ::poll(p.data(), p.size(), 20);
      if (!pump_output(run)) break;
      if (!monitor) continue;
      const double now = unix_now();
      monitor->receive(now);
      if (spare && !pump_output(*spare)) {
        log().warn("keel launch: the warm spare world ended while waiting");
        drop_spare();  // reaps it (its ranks are gone already)
        ++spare_failures;
      }
      if (!verdict) {
        verdict = monitor->judge(run.id, world, now);
        if (verdict) {
          Event e;
          e.time = now;
          e.event = "fault";
          e.detector = verdict->detector;
          e.rank = verdict->rank;
          e.step = verdict->step;
          e.world_size = world;
          e.detail = verdict->detail;
          e.extra = {{"source", "supervisor"}, {"detected_by", "heartbeat"}};
          events.append(e);
          log().warn("keel launch: {}; ending the world", verdict->detail);
          end_world(run, monitor->local_pids(run.id));
        }
      }
      // Every rank here is gone but mpirun still sits out its teardown
      // timeout: nothing is left for it to wait for. Not when a rank left on
      // purpose (finished, an error, a rollback): the exit status then says
      // what happened, and a killed mpirun would read as a crash.
      const auto pids = monitor->local_pids(run.id);
      if (!hosts.empty() || monitor->exiting(run.id) || pids.size() < size_t(world) ||
          std::any_of(pids.begin(), pids.end(), process_alive))
        ranks_gone_since = 0;
      else if (ranks_gone_since == 0)
        ranks_gone_since = now;
      else if (now - ranks_gone_since > 0.2)
        ::kill(run.pid, SIGKILL);
      // The next world waits ready once this one trains.
      if (o.warm_spare && !spare && !verdict && spare_failures < 3 &&
          monitor->steps_done(run.id) >= 1) {
        spare = spawn_world(world_command(o, world, accum, hosts, /*restart=*/true),
                            world_env(next_id, true), next_id, false);
        ++next_id;
        spare_world = world;
        spare_accum = accum;
        g_spare = spare->pid;
      }
    }
    reap_world(run);
    g_child = 0;
    if (monitor) monitor->forget(run.id);
    const auto all = read_events(events.path());
    const std::vector<Event> world_events(
        all.begin() + int64_t(std::min(events_before, all.size())), all.end());
    if (WIFEXITED(run.wait_status) && WEXITSTATUS(run.wait_status) == kExitFinished) {
      Event e;
      e.event = "finish";
      e.world_size = world;
      e.step = last_metrics_step(metrics);
      e.detail = fmt::format("finished after {} restart(s)", res.restarts);
      e.extra = {{"source", "supervisor"}};
      events.append(e);
      res.finished = true;
      break;
    }
    // Training began once a rank logged its start or resume; events before
    // that (checkpoints rejected while looking for one to resume) do not count.
    const bool began = std::any_of(world_events.begin(), world_events.end(), [](const Event& e) {
      return e.event == "start" || e.event == "resume";
    });
    if (WIFEXITED(run.wait_status) && WEXITSTATUS(run.wait_status) == kExitError && !began) {
      // A configuration or input error before training began (or no checkpoint
      // that verifies): restarting repeats it.
      Event e;
      e.event = "finish";
      e.world_size = world;
      e.detail = "gave up: the world failed with an error before training (see its output)";
      e.extra = {{"source", "supervisor"}};
      events.append(e);
      break;
    }
    const WorldFailure f = classify_failure(world_events, run.output, run.wait_status);
    const int64_t reached = last_metrics_step(metrics);
    if (!f.rank_wrote_fault) {
      Event e;
      e.time = run.ended;
      e.event = "fault";
      e.detector = f.detector;
      e.rank = f.rank;
      e.step = reached + 1;  // the step in progress when it died
      e.world_size = world;
      e.detail = f.detail;
      events.append(e);
    }
    // The next world resumes from whichever is newer: a checkpoint on disk or
    // a snapshot in memory with a copy of every shard (not after a rollback).
    const int64_t disk_resume = newest_intact_checkpoint_step(ckpt_root);
    const auto restorable = [&](int w) {
      return f.rank_wrote_rollback
                 ? disk_resume
                 : std::max(disk_resume, newest_restorable_snapshot_step(o.run_dir, w));
    };
    const int64_t resume = restorable(world);
    const bool progressed = resume > last_ckpt;  // this world saved a newer checkpoint
    failures_without_progress = progressed ? 1 : failures_without_progress + 1;
    last_ckpt = resume;

    // Blame: only faults tied to a rank count towards its exclusion, and only
    // failures in a row without progress: a rank that failed once, after the
    // run moved on since its last failure, starts a new streak. (A hang ends
    // every rank of a collective by its own watchdog, so which one is named
    // is not certain; a single such blame must not exclude a healthy rank.)
    const bool blames = f.rank >= 0 && f.rank < world &&
                        (f.detector == "crash" || f.detector == "hang" || f.detector == "sdc");
    // A crash mpirun did not attribute is no evidence about any rank: it
    // leaves the streaks alone unless the run moved on.
    for (int r = 0; r < world; ++r) {
      int& streak = blame_streak[size_t(r)];
      if (blames)
        streak = r == f.rank ? (progressed ? 1 : streak + 1) : 0;
      else if (progressed)
        streak = 0;
    }
    if (res.restarts >= o.restart_budget) {
      Event e;
      e.event = "finish";
      e.world_size = world;
      e.step = reached;
      e.detail = fmt::format("gave up: restart budget of {} spent", o.restart_budget);
      e.extra = {{"source", "supervisor"}};
      events.append(e);
      break;
    }
    if (blames && blame_streak[size_t(f.rank)] >= o.exclude_after && world > 1) {
      int smaller = world - 1;
      while (smaller >= 1 && elastic_grad_accum(o.world_size, o.grad_accum, smaller) == 0)
        --smaller;
      if (smaller >= 1) {
        const int bad = f.rank;
        if (!hosts.empty()) hosts.erase(hosts.begin() + bad);
        // mpirun places ranks in order; removing the last slot stands for
        // removing the bad one on a single machine (the ranks are equal).
        while (int(hosts.size()) > smaller) hosts.pop_back();
        Event e;
        e.event = "exclude";
        e.rank = bad;
        e.step = disk_resume;  // snapshots of the larger world do not fit the smaller one
        e.world_size = smaller;
        accum = elastic_grad_accum(o.world_size, o.grad_accum, smaller);
        e.detail = fmt::format(
            "rank {} failed {} times in a row: world {} -> {}, grad_accum {} (global batch kept)",
            bad, blame_streak[size_t(bad)], world, smaller, accum);
        events.append(e);
        res.excluded.push_back(bad);
        world = smaller;
        blame_streak.assign(size_t(world), 0);
        failures_without_progress = 1;
      }
    }
    // A failure after progress restarts at once; failing again without
    // progress backs off, doubling, so a world that cannot start does not spin.
    const double backoff =
        failures_without_progress <= 1
            ? 0.0
            : std::min(o.backoff_max_s,
                       o.backoff_s * std::pow(2.0, double(failures_without_progress - 2)));
    std::this_thread::sleep_for(std::chrono::duration<double>(backoff));
    ++res.restarts;
    restart_time_lost = unix_now() - run.ended;
    // Snapshots of the larger world do not fit a shrunk one: it resumes from disk.
    const int64_t next = restorable(world);
    Event e;
    e.event = "restart";
    e.detector = f.detector;
    e.rank = f.rank;
    e.step = next;
    // A rank that rolled back already counted the steps it threw away.
    e.steps_lost = f.rank_wrote_rollback ? 0 : std::max<int64_t>(0, reached - next);
    e.time_lost_s = restart_time_lost;
    e.world_size = world;
    e.detail = fmt::format("restart {} of {} after {:.1f}s backoff, from {} of step {}",
                           res.restarts, o.restart_budget, backoff,
                           next > disk_resume ? "the in-memory snapshot" : "the checkpoint", next);
    e.extra = {{"source", "supervisor"}, {"backoff_s", backoff}};
    events.append(e);
  }
  drop_spare();
  res.final_world = world;
  res.final_grad_accum = accum;
  return res;
}

}  // namespace keel::resilience
