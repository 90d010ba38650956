// Fault plans: every kind and field parses from TOML and from key=value
// entries, and every mistake is a ConfigError naming the entry and the key.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "resilience/fault_plan.h"

using namespace keel;
using namespace keel::resilience;

namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "<no ConfigError>";
}

}  // namespace

TEST(FaultPlan, TomlHoldsEveryKind) {
  const char* text = R"(
[[fault]]
kind = "kill"
step = 30
rank = 1

[[fault]]
kind = "hang"
step = 45
where = "kernel"

[[fault]]
kind = "nan"
step = 60
repeat = 2
param = "wte.weight"

[[fault]]
kind = "bitflip"
step = 70
target = "grad"
index = 17
bit = 3

[[fault]]
kind = "straggler"
step = 80
seconds = 0.5

[[fault]]
kind = "corrupt_checkpoint"
step = 100

[[fault]]
kind = "loss_spike"
step = 120
magnitude = 4.5
rank = -1
every_start = true
)";
  const FaultPlan p = parse_fault_plan_toml(text, "plan.toml");
  ASSERT_EQ(p.faults.size(), 7u);
  EXPECT_EQ(p.faults[0].kind, FaultKind::Kill);
  EXPECT_EQ(p.faults[0].step, 30);
  EXPECT_EQ(p.faults[0].rank, 1);
  EXPECT_EQ(p.faults[1].where, "kernel");
  EXPECT_EQ(p.faults[1].rank, 0);
  EXPECT_EQ(p.faults[2].repeat, 2);
  EXPECT_EQ(p.faults[2].param, "wte.weight");
  EXPECT_EQ(p.faults[3].target, "grad");
  EXPECT_EQ(p.faults[3].index, 17);
  EXPECT_EQ(p.faults[3].bit, 3);
  EXPECT_DOUBLE_EQ(p.faults[4].seconds, 0.5);
  EXPECT_EQ(p.faults[5].kind, FaultKind::CorruptCheckpoint);
  EXPECT_DOUBLE_EQ(p.faults[6].magnitude, 4.5);
  EXPECT_EQ(p.faults[6].rank, -1);
  EXPECT_TRUE(p.faults[6].every_start);
  for (size_t i = 0; i < p.faults.size(); ++i) EXPECT_EQ(p.faults[i].id, int(i));
  // Each kind's name reads back as the same kind in the entry syntax.
  for (const auto& f : p.faults)
    EXPECT_EQ(
        parse_fault_plan_entries("kind=" + std::string(fault_kind_name(f.kind))).faults.at(0).kind,
        f.kind);
}

TEST(FaultPlan, EntriesMatchToml) {
  const FaultPlan p = parse_fault_plan_entries(
      "kind=kill,step=30,rank=1; kind=bitflip, step=70, target=param, bit=31 "
      ";kind=straggler,step=5,seconds=2");
  ASSERT_EQ(p.faults.size(), 3u);
  EXPECT_EQ(p.faults[0].kind, FaultKind::Kill);
  EXPECT_EQ(p.faults[0].rank, 1);
  EXPECT_EQ(p.faults[1].bit, 31);
  EXPECT_EQ(p.faults[1].target, "param");
  EXPECT_EQ(p.faults[2].id, 2);
  EXPECT_DOUBLE_EQ(p.faults[2].seconds, 2.0);
  EXPECT_DOUBLE_EQ(p.faults[0].after, 0.0);
  EXPECT_DOUBLE_EQ(parse_fault_plan_entries("kind=kill,step=3,after=0.125").faults[0].after, 0.125);
  EXPECT_NE(error_of([] {
              parse_fault_plan_entries("kind=kill,step=3,after=1e6");
            }).find("after: expected seconds in [0, 86400], got 1e6"),
            std::string::npos);
}

TEST(FaultPlan, ErrorsNameEntryAndKey) {
  EXPECT_EQ(error_of([] { parse_fault_plan_entries("kind=explode,step=3"); }),
            "fault entry 'kind=explode,step=3': kind: unknown fault \"explode\" (expected kill, "
            "hang, nan, bitflip, straggler, corrupt_checkpoint, loss_spike, node_loss or "
            "kill_in_snapshot)");
  const FaultPlan nl = parse_fault_plan_entries("kind=node_loss,step=4,rank=1,machines=2");
  EXPECT_EQ(nl.faults[0].kind, FaultKind::NodeLoss);
  EXPECT_EQ(nl.faults[0].machines, 2);
  EXPECT_EQ(parse_fault_plan_entries("kind=kill_in_snapshot,step=2").faults[0].kind,
            FaultKind::KillInSnapshot);
  EXPECT_NE(
      error_of([] { parse_fault_plan_entries("kind=kill,stepp=3"); }).find("unknown key 'stepp'"),
      std::string::npos);
  EXPECT_NE(error_of([] {
              parse_fault_plan_entries("kind=bitflip,bit=32");
            }).find("bit: must be in [0, 31], got 32"),
            std::string::npos);
  EXPECT_NE(
      error_of([] { parse_fault_plan_entries("kind=kill,step=0"); }).find("step: must be in [1,"),
      std::string::npos);
  EXPECT_NE(error_of([] {
              parse_fault_plan_entries("kind=kill,step=ten");
            }).find("step: expected an integer, got \"ten\""),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_fault_plan_entries("step=3"); }).find("missing 'kind'"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              parse_fault_plan_entries("kind=hang,where=disk");
            }).find("where: expected \"collective\" or \"kernel\""),
            std::string::npos);
  EXPECT_NE(error_of([] {
              parse_fault_plan_entries("kind=hang,where=snapshot");
            }).find("where: \"snapshot\" applies to straggler only (this is hang)"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              parse_fault_plan_entries("kind=straggler,where=kernel");
            }).find("where: \"kernel\" applies to hang only (this is straggler)"),
            std::string::npos);
  EXPECT_EQ(parse_fault_plan_entries("kind=straggler,step=2,where=snapshot").faults[0].where,
            "snapshot");
  EXPECT_NE(error_of([] {
              parse_fault_plan_entries("kind=kill,step");
            }).find("expected key=value, got 'step'"),
            std::string::npos);
}

TEST(FaultPlan, TomlErrorsNameLine) {
  EXPECT_EQ(error_of([] {
              parse_fault_plan_toml(
                  "[[fault]]\nkind = \"kill\"\n\n[[fault]]\nkind = \"nan\"\nbit = 40\n", "p.toml");
            }),
            "p.toml:6: fault 1: bit: must be in [0, 31], got 40");
  EXPECT_EQ(error_of([] { parse_fault_plan_toml("[[fault]]\nstep = 4\n", "p.toml"); }),
            "p.toml:1: fault 0: missing 'kind'");
  EXPECT_EQ(error_of([] { parse_fault_plan_toml("[fault]\nkind = \"kill\"\n", "p.toml"); }),
            "p.toml:1: 'fault' must be an array of tables ([[fault]])");
  EXPECT_EQ(error_of([] { parse_fault_plan_toml("faults = 3\n", "p.toml"); }),
            "p.toml:1: unknown key 'faults' (a plan holds [[fault]] tables)");
  EXPECT_NE(error_of([] {
              parse_fault_plan_toml("[[fault]\n", "p.toml");
            }).find("p.toml:1: TOML syntax error"),
            std::string::npos);
}

TEST(FaultPlan, LoadsFileOrEntries) {
  const auto dir = std::filesystem::temp_directory_path() / "keel_test_fault_plan";
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "plan.toml").string();
  std::ofstream(path) << "[[fault]]\nkind = \"hang\"\nstep = 9\n";
  const FaultPlan f = load_fault_plan(path);
  ASSERT_EQ(f.faults.size(), 1u);
  EXPECT_EQ(f.faults[0].kind, FaultKind::Hang);
  EXPECT_EQ(f.source, path);
  EXPECT_EQ(load_fault_plan("kind=nan,step=2").faults.at(0).kind, FaultKind::Nan);
  EXPECT_TRUE(load_fault_plan("").empty());
  // A plan longer than a file name may be (a kill every 30 of 600 steps).
  std::string many;
  for (int s = 15; s < 600; s += 30)
    many += (many.empty() ? "" : ";") + std::string("kind=kill,step=") + std::to_string(s);
  ASSERT_GT(many.size(), 255u);
  EXPECT_EQ(load_fault_plan(many).faults.size(), 20u);
  EXPECT_EQ(error_of([&] { load_fault_plan((dir / "missing.toml").string()); }),
            (dir / "missing.toml").string() + ": cannot read fault plan");
}
