// The goodput model behind `keel plan`: a cluster's expected share of wall
// time that ends up in the model, from its failure rate and the costs of
// snapshots, checkpoints and restarts; the intervals that maximise it; and a
// seeded discrete-event simulation of the same cluster to check the formula.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace keel::resilience {

// One cluster and its recovery settings. Times in seconds; intervals in steps.
struct ClusterModel {
  int64_t chips = 1;
  double mtbf_chip_s = 0;      // mean time between failures of one chip
  double step_s = 0;           // one training step, no stalls
  double restart_s = 0;        // per failure: detection + new world + state load
  double startup_s = 0;        // once per run: processes, data, first world
  double snapshot_s = 0;       // stall per in-memory snapshot
  double checkpoint_s = 0;     // stall per disk checkpoint
  int64_t snapshot_every = 0;  // 0: no snapshots (every failure goes back to disk)
  int64_t checkpoint_every = 0;
  int64_t steps = 0;  // run length (0: steady state, start-up ignored)
  // Share of failures whose snapshot copies are lost too (the buddy died
  // before the state was copied again): these go back to disk. < 0: derived,
  // 1 - exp(-restart_s / mtbf_chip_s) (the buddy fails within a restart).
  double snapshot_loss = -1;

  double failure_rate() const;  // failures per wall second, chips / mtbf_chip_s
  // The effective snapshot_loss (1 without snapshots or with one chip).
  double snapshot_loss_share() const;
  // Throws keel::Error naming the first field out of range.
  void validate() const;
};

// Where the wall time goes, as shares of it (they sum to 1).
struct GoodputTerms {
  double goodput = 0;      // steps that stand
  double snapshots = 0;    // snapshot stalls
  double checkpoints = 0;  // checkpoint stalls
  double restarts = 0;     // detection and restart per failure
  double rework = 0;       // steps redone after failures
  double startup = 0;
  double failures_per_day = 0;
  double steps_lost_per_failure = 0;  // expected
  double steps_lost_per_day = 0;
  // The largest of the loss terms: "snapshots", "checkpoints", "restarts",
  // "rework" or "startup".
  std::string dominant() const;
};

// The first-order renewal model: a step costs step_s plus its share of the
// snapshot and checkpoint stalls; each failure (rate chips / mtbf) costs
// restart_s plus the work since the last snapshot (or, for a snapshot_loss
// share, the last checkpoint), half an interval on average.
GoodputTerms predict_goodput(const ClusterModel& m);

// Intervals: Young-Daly's sqrt(2 * cost * MTBF_seen_by_that_level) / step_s
// for each level, and the integer pair that maximises predict_goodput
// (searched around it).
struct IntervalChoice {
  int64_t young_daly_snapshot = 0, young_daly_checkpoint = 0;
  int64_t best_snapshot = 0, best_checkpoint = 0;
  double best_goodput = 0;
};
IntervalChoice best_intervals(const ClusterModel& m);

// Seeded discrete-event simulation of m (exponential failures over the
// whole cluster): `runs` runs of m.steps steps each (m.steps must be > 0).
struct SimulationResult {
  std::vector<double> goodput;  // one per run, sorted
  double mean = 0, p05 = 0, p50 = 0, p95 = 0;
  double mean_failures = 0;
  double mean_steps_lost_per_failure = 0;
};
SimulationResult simulate_goodput(const ClusterModel& m, int runs, uint64_t seed);

}  // namespace keel::resilience
