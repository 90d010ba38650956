// The goodput model and its discrete-event simulation (see goodput_model.h).
#include "resilience/goodput_model.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "core/error.h"
#include "core/rng.h"

namespace keel::resilience {

namespace {

double stall_per_step(const ClusterModel& m) {
  double s = 0;
  if (m.snapshot_every > 0) s += m.snapshot_s / double(m.snapshot_every);
  if (m.checkpoint_every > 0) s += m.checkpoint_s / double(m.checkpoint_every);
  return s;
}

// Candidate intervals around a Young-Daly value: every integer up to 64,
// then about 2% apart, up to 8x the value (and at least 64).
std::vector<int64_t> candidates(int64_t yd) {
  std::vector<int64_t> c;
  const int64_t hi = std::max<int64_t>(64, 8 * yd);
  for (int64_t k = 1; k <= hi; k = std::max(k + 1, int64_t(double(k) * 1.02))) c.push_back(k);
  return c;
}

int64_t young_daly_steps(double cost_s, double rate, double step_s) {
  if (rate <= 0) return std::numeric_limits<int32_t>::max();
  if (cost_s <= 0) return 1;
  const double tau = std::sqrt(2.0 * cost_s / rate);
  return std::max<int64_t>(1, int64_t(std::llround(tau / step_s)));
}

}  // namespace

double ClusterModel::failure_rate() const {
  return double(chips) / mtbf_chip_s;
}

double ClusterModel::snapshot_loss_share() const {
  if (snapshot_every <= 0 || chips < 2) return 1.0;
  if (snapshot_loss >= 0) return snapshot_loss;
  return 1.0 - std::exp(-restart_s / mtbf_chip_s);
}

void ClusterModel::validate() const {
  if (chips < 1) fail("plan: chips must be >= 1, got {}", chips);
  if (!(mtbf_chip_s > 0) || !std::isfinite(mtbf_chip_s))
    fail("plan: the MTBF per chip must be a positive number of seconds, got {}", mtbf_chip_s);
  if (!(step_s > 0)) fail("plan: step time must be > 0 s, got {}", step_s);
  for (auto [name, v] : {std::pair{"restart", restart_s},
                         {"startup", startup_s},
                         {"snapshot", snapshot_s},
                         {"checkpoint", checkpoint_s}})
    if (!(v >= 0) || !std::isfinite(v)) fail("plan: {} cost must be >= 0 s, got {}", name, v);
  if (snapshot_every < 0)
    fail("plan: snapshot interval must be >= 0 steps, got {}", snapshot_every);
  if (checkpoint_every < 1)
    fail("plan: checkpoint interval must be >= 1 step, got {}", checkpoint_every);
  if (steps < 0) fail("plan: steps must be >= 0, got {}", steps);
  if (snapshot_loss > 1) fail("plan: snapshot loss share must be in [0, 1], got {}", snapshot_loss);
}

std::string GoodputTerms::dominant() const {
  const std::pair<const char*, double> t[] = {{"snapshots", snapshots},
                                              {"checkpoints", checkpoints},
                                              {"restarts", restarts},
                                              {"rework", rework},
                                              {"startup", startup}};
  return std::max_element(std::begin(t), std::end(t),
                          [](const auto& a, const auto& b) { return a.second < b.second; })
      ->first;
}

GoodputTerms predict_goodput(const ClusterModel& m) {
  m.validate();
  GoodputTerms g;
  const double lambda = m.failure_rate(), p = m.snapshot_loss_share();
  const double e_step = m.step_s + stall_per_step(m);
  g.steps_lost_per_failure =
      (1.0 - p) * double(m.snapshot_every) / 2.0 + p * double(m.checkpoint_every) / 2.0;
  const double per_failure = m.restart_s + g.steps_lost_per_failure * e_step;
  g.failures_per_day = lambda * 86400.0;
  g.steps_lost_per_day = g.failures_per_day * g.steps_lost_per_failure;
  const double busy = lambda * per_failure;  // share of the training time spent on failures
  if (busy >= 1.0) {                         // failures come faster than the work between them
    g.restarts = m.restart_s / per_failure;
    g.rework = 1.0 - g.restarts;
    return g;
  }
  // Wall = start-up + W * e_step / (1 - busy); per step of wall after start-up:
  const double W = double(m.steps);
  const double train = (m.steps > 0 ? W : 1.0) * e_step / (1.0 - busy);
  const double wall = (m.steps > 0 ? m.startup_s : 0.0) + train;
  const double w = m.steps > 0 ? W : 1.0;
  g.goodput = w * m.step_s / wall;
  g.snapshots = m.snapshot_every > 0 ? w * m.snapshot_s / double(m.snapshot_every) / wall : 0.0;
  g.checkpoints = w * m.checkpoint_s / double(m.checkpoint_every) / wall;
  g.restarts = lambda * m.restart_s * train / wall;
  g.rework = lambda * g.steps_lost_per_failure * e_step * train / wall;
  g.startup = m.steps > 0 ? m.startup_s / wall : 0.0;
  return g;
}

IntervalChoice best_intervals(const ClusterModel& m) {
  m.validate();
  IntervalChoice c;
  const double lambda = m.failure_rate(), p = m.snapshot_loss_share();
  const bool snaps = m.snapshot_every > 0 && m.chips > 1;
  c.young_daly_checkpoint = young_daly_steps(m.checkpoint_s, lambda * p, m.step_s);
  c.young_daly_snapshot = snaps ? young_daly_steps(m.snapshot_s, lambda * (1 - p), m.step_s) : 0;
  const int64_t cap = std::numeric_limits<int32_t>::max();
  const std::vector<int64_t> ks =
      snaps ? candidates(std::min(c.young_daly_snapshot, cap / 8)) : std::vector<int64_t>{0};
  const std::vector<int64_t> kc = candidates(std::min(c.young_daly_checkpoint, cap / 8));
  ClusterModel t = m;
  c.best_goodput = -1;
  for (int64_t s : ks)
    for (int64_t k : kc) {
      t.snapshot_every = s;
      t.checkpoint_every = k;
      const double g = predict_goodput(t).goodput;
      if (g > c.best_goodput) c.best_goodput = g, c.best_snapshot = s, c.best_checkpoint = k;
    }
  return c;
}

SimulationResult simulate_goodput(const ClusterModel& m, int runs, uint64_t seed) {
  m.validate();
  if (m.steps < 1) fail("plan --simulate: the run length (steps) must be >= 1");
  if (runs < 1) fail("plan --simulate: runs must be >= 1, got {}", runs);
  const double lambda = m.failure_rate(), p = m.snapshot_loss_share();
  SimulationResult r;
  double failures = 0, lost_steps = 0;
  for (int run = 0; run < runs; ++run) {
    const Rng rng(seed, uint64_t(run));
    uint64_t draw = 0;
    const auto uniform = [&] {  // (0, 1) with 53 bits
      return (double(rng.u64(draw++) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
    };
    const auto next_gap = [&] { return -std::log(uniform()) / lambda; };
    double now = m.startup_s, next_fail = now + next_gap();
    int64_t done = 0, snap = 0, ckpt = 0;
    while (done < m.steps) {
      const int64_t s = done + 1;
      double d = m.step_s;
      const bool take_snap = m.snapshot_every > 0 && s % m.snapshot_every == 0;
      const bool take_ckpt = s % m.checkpoint_every == 0;
      if (take_snap) d += m.snapshot_s;
      if (take_ckpt) d += m.checkpoint_s;
      if (now + d <= next_fail) {
        now += d;
        done = s;
        if (take_snap) snap = s;
        if (take_ckpt) ckpt = s, snap = std::max(snap, s);
        continue;
      }
      // A failure inside this step: the partial step and the steps since the
      // restore point are lost; failures during the restart restart it.
      const double partial = std::min(1.0, (next_fail - now) / m.step_s);
      double t = next_fail;
      for (;;) {
        failures += 1;
        now = t + m.restart_s;
        const double nf = t + next_gap();
        if (nf >= now) {
          next_fail = nf;
          break;
        }
        t = nf;  // failed again during the restart: it starts over from there
      }
      const bool to_disk = uniform() < p;
      const int64_t back = to_disk ? ckpt : snap;
      lost_steps += double(done - back) + partial;
      if (to_disk) snap = ckpt;
      done = back;
    }
    r.goodput.push_back(double(m.steps) * m.step_s / now);
  }
  std::sort(r.goodput.begin(), r.goodput.end());
  const auto q = [&](double f) {
    return r.goodput[size_t(std::llround(f * double(r.goodput.size() - 1)))];
  };
  double sum = 0;
  for (double g : r.goodput) sum += g;
  r.mean = sum / double(runs);
  r.p05 = q(0.05), r.p50 = q(0.5), r.p95 = q(0.95);
  r.mean_failures = failures / double(runs);
  r.mean_steps_lost_per_failure = failures > 0 ? lost_steps / failures : 0.0;
  return r;
}

}  // namespace keel::resilience
