// Fault plans: which failures to inject, where and when, for tests and for
// users who want to rehearse failures on their own hardware. A plan is a TOML
// file of [[fault]] tables or a list of "kind=...,step=...,rank=..." entries;
// docs/faults.md documents every kind and field.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace keel::resilience {

enum class FaultKind {
  Kill,               // the rank SIGKILLs itself
  Hang,               // the rank sleeps forever inside a collective or a kernel
  Nan,                // a NaN is written into a gradient before the gradient exchange
  BitFlip,            // one bit of a parameter or gradient element is flipped
  Straggler,          // the rank sleeps `seconds` before the step
  CorruptCheckpoint,  // a byte of the checkpoint written at `step` is flipped
  LossSpike,          // the step's loss, as the detector sees it, is raised by `magnitude`
  // The rank's machine disappears before the step: its in-memory snapshots
  // (its own and the buddy copy it keeps) are removed, then it SIGKILLs itself.
  NodeLoss,
  // The rank SIGKILLs itself halfway through writing its in-memory snapshot
  // of `step` (a torn snapshot slot).
  KillInSnapshot,
};

// "kill", "hang", ... (the names the plan uses).
std::string_view fault_kind_name(FaultKind k);

struct Fault {
  int id = 0;  // position in the plan; names the fault in events ("fault_id")
  FaultKind kind = FaultKind::Kill;
  int64_t step = 1;  // 1-based step during which it fires (as in metrics.jsonl)
  int rank = 0;      // rank it fires on; -1: every rank
  // Nan: how many consecutive steps get a NaN (2 makes the NaN detector roll back).
  int64_t repeat = 1;
  // Fires again on every start of the world instead of once per run (a rank
  // that keeps failing; the supervisor then excludes it).
  bool every_start = false;
  // BitFlip: "param", "grad" or "moment" (the first AdamW moment, in the part of the
  // optimizer state this rank holds); the parameter (empty: the first), flat element, bit 0..31.
  std::string target = "param";
  std::string param;
  int64_t index = 0;
  int bit = 30;
  // Hang: "collective" or "kernel". Straggler: "snapshot" sleeps after the
  // step, before its in-memory snapshot (a rank behind its peers there);
  // otherwise before the step.
  std::string where = "collective";
  double seconds = 1.0;  // Straggler delay
  // Kill: seconds into the step at which SIGKILL fires (0: before the step
  // starts). Real failures strike mid-step and take the step's work so far.
  double after = 0;
  double magnitude = 5.0;  // LossSpike: nats added to the loss
  // NodeLoss: how many machines go at once: rank slots rank, rank+1, ...
  // (mod the world size) lose their in-memory snapshots (2: a rank and its buddy).
  int machines = 1;
};

struct FaultPlan {
  std::vector<Fault> faults;
  std::string source;  // file name or "--faults '...'"
  bool empty() const { return faults.empty(); }
};

// Parses a TOML plan: [[fault]] tables with the fields of Fault. Unknown
// kinds, keys and bad values are ConfigError "source:line: fault N: ...".
FaultPlan parse_fault_plan_toml(std::string_view text, const std::string& source);
// Parses entries "kind=kill,step=30,rank=1" separated by ';'. Errors name the entry.
FaultPlan parse_fault_plan_entries(std::string_view entries);
// `spec` is a path to a .toml file when it names an existing file or ends in
// ".toml", otherwise key=value entries. Empty spec: an empty plan.
FaultPlan load_fault_plan(const std::string& spec);

}  // namespace keel::resilience
