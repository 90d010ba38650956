// The supervisor with real processes: a world that crashes is restarted until
// it finishes, a restart budget ends a hopeless run, a fault a rank recorded
// names the detector, an error before training is not retried, and under a
// real 2-rank mpirun a rank that dies on every start is excluded and the world
// shrinks with the accumulation that keeps the global batch.
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "io/atomic_file.h"
#include "resilience/supervisor.h"

using namespace keel;
using namespace keel::resilience;
namespace fs = std::filesystem;

namespace {

std::string fresh_dir(const std::string& name) {
  const auto d = fs::temp_directory_path() / ("keel_sup_" + std::to_string(::getpid())) / name;
  fs::remove_all(d);
  fs::create_directories(d);
  return d.string();
}

// A "rank" that is a shell script; the supervisor appends its overrides.
SupervisorOptions script_world(const std::string& run, const std::string& script) {
  SupervisorOptions o;
  o.program = "/bin/sh";
  o.args = {"-c", script, "sh", "train"};
  o.run_dir = run;
  o.use_mpirun = false;
  o.backoff_s = 0;
  o.backoff_max_s = 0;
  o.echo = false;
  return o;
}

std::vector<std::string> names(const std::vector<Event>& ev) {
  std::vector<std::string> out;
  for (const auto& e : ev) out.push_back(e.event + (e.detector.empty() ? "" : ":" + e.detector));
  return out;
}

}  // namespace

TEST(Supervisor, ElasticAccumulationKeepsGlobalBatch) {
  EXPECT_EQ(elastic_grad_accum(2, 1, 1), 2);
  EXPECT_EQ(elastic_grad_accum(4, 3, 3), 4);
  EXPECT_EQ(elastic_grad_accum(4, 1, 3), 0);
  EXPECT_EQ(elastic_grad_accum(2, 1, 0), 0);
}

TEST(Supervisor, WorldCommand) {
  SupervisorOptions o;
  o.program = "/bin/keel";
  o.args = {"train", "train.steps=10"};
  o.faults = "kind=kill,step=3";
  const auto c = world_command(o, 2, 1, {"a", "b"});
  const std::string line = fmt::format("{}", fmt::join(c, " "));
  EXPECT_EQ(c.front(), "mpirun");
  EXPECT_NE(line.find("-n 2 "), std::string::npos);
  EXPECT_NE(line.find("--host a,b /bin/keel train train.steps=10 train.grad_accum=1 "
                      "resilience.faults=kind=kill,step=3"),
            std::string::npos);
  // Across hosts the transport is OpenMPI's to choose; on this machine alone
  // shared memory (ob1) is named, unless the user named one.
  EXPECT_EQ(line.find("pml"), std::string::npos);
  const auto has_ob1 = [](const std::vector<std::string>& cmd) {
    return fmt::format("{}", fmt::join(cmd, " ")).find("--mca pml ob1") != std::string::npos;
  };
  EXPECT_TRUE(has_ob1(world_command(o, 2, 1, {})));
  o.hostfile = "hosts.txt";
  EXPECT_FALSE(has_ob1(world_command(o, 2, 1, {})));
  o.hostfile.clear();
  o.mpirun_args = {"--mca", "pml", "ucx"};
  EXPECT_FALSE(has_ob1(world_command(o, 2, 1, {})));
  o.mpirun_args.clear();
  ::setenv("OMPI_MCA_pml", "ucx", 1);
  EXPECT_FALSE(has_ob1(world_command(o, 2, 1, {})));
  ::unsetenv("OMPI_MCA_pml");
  o.use_mpirun = false;
  o.faults.clear();
  EXPECT_EQ(
      world_command(o, 1, 2, {}),
      (std::vector<std::string>{"/bin/keel", "train", "train.steps=10", "train.grad_accum=2"}));
  // --no-resume holds for the first world only; restarts resume.
  o.args = {"train", "--no-resume", "train.steps=10"};
  EXPECT_EQ(world_command(o, 1, 1, {}, false)[2], "--no-resume");
  EXPECT_EQ(
      world_command(o, 1, 1, {}, true),
      (std::vector<std::string>{"/bin/keel", "train", "train.steps=10", "train.grad_accum=1"}));
}

TEST(Supervisor, BlamedRankFromMpirunOutput) {
  EXPECT_EQ(blamed_rank_from_output("mpirun noticed that process rank 1 with PID 0 on node vm "
                                    "exited on signal 9 (Killed)."),
            1);
  EXPECT_EQ(blamed_rank_from_output("  Process name: [[4968,1],3]\n  Exit code:    76\n"), 3);
  EXPECT_EQ(blamed_rank_from_output("nothing to see"), -1);
}

TEST(Supervisor, RestartsCrashedWorldUntilItFinishes) {
  const std::string run = fresh_dir("crash");
  // Dies by SIGKILL on its first two starts.
  const std::string script = "n=$(cat " + run + "/count 2>/dev/null || echo 0); echo $((n+1)) > " +
                             run + "/count; [ $n -ge 2 ] || kill -9 $$; exit 0";
  SupervisorOptions o = script_world(run, script);
  const SupervisorResult r = run_supervisor(o);
  EXPECT_TRUE(r.finished);
  EXPECT_EQ(r.restarts, 2);
  const auto ev = read_events(run + "/events.jsonl");
  EXPECT_EQ(names(ev), (std::vector<std::string>{"start", "fault:crash", "restart:crash",
                                                 "fault:crash", "restart:crash", "finish"}));
  EXPECT_NE(ev[1].detail.find("killed by signal 9"), std::string::npos);
  EXPECT_EQ(ev[2].world_size, 1);
}

TEST(Supervisor, BudgetEndsHopelessRun) {
  const std::string run = fresh_dir("budget");
  SupervisorOptions o = script_world(run, "exit 3");
  o.restart_budget = 2;
  const SupervisorResult r = run_supervisor(o);
  EXPECT_FALSE(r.finished);
  EXPECT_EQ(r.restarts, 2);
  const auto ev = read_events(run + "/events.jsonl");
  ASSERT_FALSE(ev.empty());
  EXPECT_EQ(ev.back().event, "finish");
  EXPECT_NE(ev.back().detail.find("restart budget of 2 spent"), std::string::npos);
}

TEST(Supervisor, ErrorBeforeTrainingIsNotRetried) {
  const std::string run = fresh_dir("error");
  const SupervisorResult r = run_supervisor(script_world(run, "echo 'bad config' >&2; exit 1"));
  EXPECT_FALSE(r.finished);
  EXPECT_EQ(r.restarts, 0);
}

// Every checkpoint damaged: the ranks record each rejection, then stop with
// an error before training. Restarting cannot help, so the supervisor stops.
TEST(Supervisor, NoCheckpointThatVerifiesIsNotRetried) {
  const std::string run = fresh_dir("unverifiable");
  const std::string script =
      "printf '%s\\n' '{\"time\":1,\"event\":\"fault\",\"detector\":\"checkpoint_corrupt\","
      "\"step\":20}' >> " +
      run + "/events.jsonl; echo 'none of the 1 checkpoints verifies' >&2; exit 1";
  const SupervisorResult r = run_supervisor(script_world(run, script));
  EXPECT_FALSE(r.finished);
  EXPECT_EQ(r.restarts, 0);
}

TEST(Supervisor, RankRecordedFaultNamesDetector) {
  const std::string run = fresh_dir("hang");
  const std::string ev_path = run + "/events.jsonl";
  const std::string script =
      "if [ ! -f " + run + "/once ]; then touch " + run +
      "/once; printf '%s\\n' '{\"time\":1,\"event\":\"fault\",\"detector\":\"hang\",\"rank\":0,"
      "\"step\":12}' >> " +
      ev_path + "; exit 76; fi; exit 0";
  const SupervisorResult r = run_supervisor(script_world(run, script));
  EXPECT_TRUE(r.finished);
  EXPECT_EQ(names(read_events(ev_path)),
            (std::vector<std::string>{"start", "fault:hang", "restart:hang", "finish"}));
}

TEST(Supervisor, MpirunExcludesRankThatAlwaysFails) {
  if (std::system("mpirun --version > /dev/null 2>&1") != 0) GTEST_SKIP() << "no mpirun";
  const std::string run = fresh_dir("elastic");
  // Rank 1 dies at every start; rank 0 waits to be torn down, or, alone,
  // records its arguments and finishes.
  const std::string script =
      "if [ \"$OMPI_COMM_WORLD_RANK\" = 1 ]; then kill -9 $$; fi; "
      "if [ \"$OMPI_COMM_WORLD_SIZE\" = 1 ]; then echo \"$@\" > " +
      run + "/args; exit 0; fi; sleep 20";
  SupervisorOptions o = script_world(run, script);
  o.use_mpirun = true;
  o.world_size = 2;
  o.grad_accum = 1;
  o.exclude_after = 2;
  const SupervisorResult r = run_supervisor(o);
  EXPECT_TRUE(r.finished);
  // mpirun does not always name the rank that died (a loaded machine can end
  // the world before it reports); an unnamed crash neither blames nor clears.
  EXPECT_GE(r.restarts, 2);
  EXPECT_EQ(r.final_world, 1);
  EXPECT_EQ(r.final_grad_accum, 2);
  EXPECT_EQ(r.excluded, std::vector<int>{1});
  const auto ev = read_events(run + "/events.jsonl");
  ASSERT_GE(ev.size(), 7u);
  EXPECT_EQ(ev.front().event, "start");
  EXPECT_EQ(ev.back().event, "finish");
  int excludes = 0, named = 0;
  for (const auto& e : ev) {
    if (e.event == "fault") {
      EXPECT_EQ(e.detector, "crash");
      EXPECT_TRUE(e.rank == 1 || e.rank == -1) << "a crash blamed on healthy rank " << e.rank;
      named += e.rank == 1;
    }
    if (e.event == "exclude") {
      ++excludes;
      EXPECT_EQ(e.rank, 1);
      EXPECT_EQ(e.world_size, 1);
    }
  }
  EXPECT_EQ(excludes, 1);
  EXPECT_GE(named, 2);
  std::ifstream in(run + "/args");
  std::string args;
  std::getline(in, args);
  EXPECT_EQ(args, "train train.grad_accum=2");
}
