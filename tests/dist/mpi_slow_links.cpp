// Slow-link modes run as real ranks under mpirun: compressed gradient sums
// give every rank the same bits, stay close to the exact sum and send at
// least 4x (int8) / 20x (top-k 1%) fewer bytes; DiLoCo's replicas agree only
// at outer steps, and its outer step equals a hand computation from every
// rank's local parameters (gathered here, not by the sync).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>

#include "../train/train_test_util.h"
#include "backend/backend.h"
#include "core/error.h"
#include "core/rng.h"
#include "dist/compressed_sum.h"
#include "dist/data_parallel.h"
#include "dist/diloco_sync.h"
#include "dist/replica_state.h"
#include "mpi_test_main.h"

using namespace keel;
using namespace keel::dist;
using namespace keel::train;
using namespace keel::train::testing;
using keel::dist::testing::world;

namespace {

std::unique_ptr<backend::Backend> single_threaded_cpu() {
  auto be = backend::make_backend("cpu");
  be->set_threads(1);
  return be;
}

std::unique_ptr<model::Model> make_tiny(backend::Backend& be) {
  model::ModelConfig cfg = tiny_model_config();
  cfg.n_layer = 2;
  auto m = model::make_model(cfg, be);
  m->init(5);
  m->sync_compute_weights();
  return m;
}

TrainerOptions options(int64_t steps) {
  Communicator& c = world().comm();
  TrainerOptions o = tiny_options(4, 1, steps);
  o.data_world = c.size();
  o.data_rank = c.rank();
  return o;
}

bool same_as_rank0(const std::vector<float>& v) {
  std::vector<float> r0 = v;
  world().comm().broadcast(std::as_writable_bytes(std::span<float>(r0)), 0);
  return std::memcmp(r0.data(), v.data(), v.size() * sizeof(float)) == 0;
}

void print0(const std::string& s) {
  if (world().rank() == 0) std::printf("%s\n", s.c_str());
}

// A per-rank pseudo-random vector with a few large entries (like gradients).
std::vector<float> rank_vector(int64_t n, int rank) {
  const Rng rng(1000 + uint64_t(rank), 0);
  std::vector<float> v(static_cast<size_t>(n));
  rng.fill_normal(v.data(), n, 1e-3f);
  for (int64_t i = 0; i < n; i += 97) v[size_t(i)] *= 50;
  return v;
}

// A twin's sync: no exchange at all, only the rank's own AdamW step with the
// given variance_keep (what compress_update runs before its codec).
class OwnStepOnly final : public ReplicaSync {
 public:
  explicit OwnStepOnly(float keep) : keep_(keep) {}
  void begin_step(int64_t) override {}
  void finish_gradients(const std::vector<nn::Parameter*>&) override {}
  double mean(double x) override { return x; }
  void optimizer_step(AdamW& opt, double lr, float grad_scale) override {
    opt.step(lr, grad_scale, keep_);
  }

 private:
  float keep_;
};

}  // namespace

TEST(CompressedSum, SameBitsOnEveryRankAndCloseToTheExactSum) {
  Communicator& c = world().comm();
  const int64_t n = 5000;
  for (int kind_i = 0; kind_i < 5; ++kind_i) {
    // The fourth: top-k with int8 values (their rounding stays in the residual).
    const GradCodecKind kind = kind_i == 0   ? GradCodecKind::Bf16
                               : kind_i == 1 ? GradCodecKind::Int8
                               : kind_i == 4 ? GradCodecKind::Int4
                                             : GradCodecKind::TopK;
    GradCodecConfig cfg{kind, 256, 0.05};
    cfg.topk_int8 = kind_i == 3;
    CompressedSum cs(c, cfg, n);
    const size_t un = static_cast<size_t>(n);
    std::vector<float> exact(un, 0.f), out(un), delivered(un, 0.f);
    const int rounds = 40;
    for (int k = 0; k < rounds; ++k) {
      const auto x = rank_vector(n, c.rank());
      cs.sum(x, out, "test vector");
      ASSERT_TRUE(same_as_rank0(out)) << grad_codec_name(kind) << " round " << k;
      for (int64_t i = 0; i < n; ++i) delivered[size_t(i)] += out[size_t(i)];
    }
    // Error feedback: over many rounds the sum of what arrived equals the sum
    // of what was sent, minus what is still held in the residuals.
    std::vector<float> held(cs.residual().begin(), cs.residual().end());
    c.allreduce_sum(held);
    for (int r = 0; r < c.size(); ++r) {
      const auto x = rank_vector(n, r);
      for (int64_t i = 0; i < n; ++i) exact[size_t(i)] += float(rounds) * x[size_t(i)];
    }
    double worst = 0, scale = 0;
    for (int64_t i = 0; i < n; ++i) {
      worst = std::max(
          worst, double(std::fabs(delivered[size_t(i)] + held[size_t(i)] - exact[size_t(i)])));
      scale = std::max(scale, double(std::fabs(exact[size_t(i)])));
    }
    EXPECT_LT(worst, 1e-5 * scale) << grad_codec_name(kind);
    print0(fmt::format("{}{}: delivered + residual vs exact over {} rounds: {:.3g} (scale {:.3g})",
                       grad_codec_name(kind), cfg.topk_int8 ? " int8" : "", rounds, worst, scale));
  }
}

// Data parallelism with each codec: replicas stay bit-identical, the loss
// still falls, and the bytes sent per step shrink by the promised factors.
TEST(CompressedDataParallel, ReplicasIdenticalAndTrafficReduced) {
  Communicator& c = world().comm();
  const int64_t steps = 6;
  std::map<std::string, double> bytes;
  for (GradCodecKind kind : {GradCodecKind::None, GradCodecKind::Bf16, GradCodecKind::Int8,
                             GradCodecKind::Int4, GradCodecKind::TopK}) {
    auto be = single_threaded_cpu();
    auto m = make_tiny(*be);
    Trainer t = make_trainer(*m, *be, options(steps));
    DataParallelOptions dpo;
    dpo.codec = GradCodecConfig{kind, 256, 0.01};
    DataParallel dp(c, *m, dpo);
    t.set_replica_sync(&dp);
    double first = 0, last = 0, sent = 0;
    while (!t.done()) {
      const StepMetrics sm = t.step();
      if (sm.step == 1) first = sm.loss;
      last = sm.loss;
      ASSERT_TRUE(sm.bytes_sent.has_value());
      sent += double(*sm.bytes_sent);
      ASSERT_TRUE(same_as_rank0(flat_params(*m))) << grad_codec_name(kind) << " step " << sm.step;
    }
    EXPECT_LT(last, first) << grad_codec_name(kind);
    bytes[grad_codec_name(kind)] = sent / double(steps);
  }
  print0(fmt::format(
      "bytes sent per step: none {:.0f}, bf16 {:.0f}, int8 {:.0f}, int4 {:.0f}, topk {:.0f}",
      bytes["none"], bytes["bf16"], bytes["int8"], bytes["int4"], bytes["topk"]));
  // The plain sum sends 2 (N-1)/N of the vector per rank (reduce-scatter +
  // all-gather); a compressed all-gather sends (N-1) payloads: the advantage
  // is the codec's ratio times 2/N (4x / 20x at the 2 ranks of the bench).
  const double N = double(c.size());
  EXPECT_GE(bytes["none"] / bytes["bf16"], 1.9 * 2 / N);
  EXPECT_GE(bytes["none"] / bytes["int8"], 4.0 * 2 / N);
  EXPECT_GE(bytes["none"] / bytes["int4"], 7.5 * 2 / N);
  EXPECT_GE(bytes["none"] / bytes["topk"], 20.0 * 2 / N);
}

// The sparsity warm-up's share: topk_warmup_start (25% by default) at the
// first step, decaying exponentially to topk_fraction at topk_warmup_steps,
// then constant.
TEST(TopkWarmup, ShareDecaysFromAQuarterToTheFraction) {
  GradCodecConfig cfg{GradCodecKind::TopK, 256, 0.01, 100};
  EXPECT_DOUBLE_EQ(topk_fraction_at(cfg, 0), 0.25);
  EXPECT_NEAR(topk_fraction_at(cfg, 50), std::sqrt(0.25 * 0.01), 1e-12);
  EXPECT_DOUBLE_EQ(topk_fraction_at(cfg, 100), 0.01);
  EXPECT_DOUBLE_EQ(topk_fraction_at(cfg, 1000), 0.01);
  for (int64_t s = 1; s <= 100; ++s)
    EXPECT_LT(topk_fraction_at(cfg, s), topk_fraction_at(cfg, s - 1));
  cfg.topk_warmup_steps = 0;
  EXPECT_DOUBLE_EQ(topk_fraction_at(cfg, 0), 0.01);
  cfg = GradCodecConfig{GradCodecKind::TopK, 256, 0.5, 100};  // denser than the start
  EXPECT_DOUBLE_EQ(topk_fraction_at(cfg, 0), 0.5);
  cfg = GradCodecConfig{GradCodecKind::TopK, 256, 0.01, 10};  // a dense start
  cfg.topk_warmup_start = 1.0;
  EXPECT_DOUBLE_EQ(topk_fraction_at(cfg, 0), 1.0);
  EXPECT_NEAR(topk_fraction_at(cfg, 5), 0.1, 1e-12);
}

// dist.compress_update: each rank takes its own AdamW step (own moments, own
// clip) and the replicas apply the mean of those updates. With top-k sending
// every element the result equals, to rounding, before - mean_r(before -
// after_r) computed here in double from twin trainers that step without any
// sync from the same parameters, with plain AdamW and with the second moment
// corrected to the whole batch (variance_keep = 1/N, which must change the
// update). With top-k 1% and a sparsity warm-up the replicas stay
// bit-identical and the bytes fall as the share decays.
TEST(CompressedDataParallel, CompressUpdateAppliesTheMeanOfEveryRanksOwnUpdate) {
  Communicator& c = world().comm();
  const int64_t steps = 5;
  auto be = single_threaded_cpu();
  DataParallelOptions dpo;
  dpo.codec = GradCodecConfig{GradCodecKind::TopK, 256, 1.0};
  dpo.compress_update = true;
  std::vector<std::vector<float>> finals;
  for (float keep : {1.f, 1.f / float(c.size())}) {
    auto m = make_tiny(*be);
    Trainer t = make_trainer(*m, *be, options(steps));
    dpo.variance_keep = keep;
    DataParallel dp(c, *m, dpo);
    dp.shard_optimizer(t.optimizer());
    t.set_replica_sync(&dp);
    auto twin_m = make_tiny(*be);
    Trainer twin = make_trainer(*twin_m, *be, options(steps));
    OwnStepOnly own(keep);
    twin.set_replica_sync(&own);
    double worst = 0;
    bool ranks_differ = false;
    while (!t.done()) {
      const auto before = flat_params(*m);
      t.step();
      twin.step();
      const auto all = gather_rank_vectors(c, flat_params(*twin_m));
      const auto got = flat_params(*m);
      ASSERT_TRUE(same_as_rank0(got));
      for (size_t i = 0; i < got.size(); ++i) {
        double u = 0;
        for (const auto& r : all) u += double(before[i]) - double(r[i]);
        const double want = double(before[i]) - u / double(all.size());
        worst = std::max(worst, std::fabs(want - double(got[i])));
        if (all.back()[i] != all.front()[i]) ranks_differ = true;
      }
      set_flat_params(*twin_m, got);
    }
    EXPECT_LT(worst, 1e-6) << "variance_keep " << keep;
    EXPECT_TRUE(ranks_differ) << "every rank's own update should differ (different data)";
    print0(fmt::format(
        "compress_update (variance_keep {:.3g}) vs mean of own AdamW updates (double): max "
        "|diff| {:.3g}",
        keep, worst));
    finals.push_back(flat_params(*m));
  }
  double moved = 0;
  for (size_t i = 0; i < finals[0].size(); ++i)
    moved = std::max(moved, std::fabs(double(finals[0][i]) - double(finals[1][i])));
  EXPECT_GT(moved, 1e-5) << "the corrected second moment should change the updates";

  // Top-k 1% (int8 values) with a 6-step sparsity warm-up: identical replicas,
  // falling bytes.
  auto m2 = make_tiny(*be);
  const int64_t steps2 = 8;
  Trainer t2 = make_trainer(*m2, *be, options(steps2));
  dpo.codec = GradCodecConfig{GradCodecKind::TopK, 256, 0.01, 6, 0.25, true};
  DataParallel dp2(c, *m2, dpo);
  dp2.shard_optimizer(t2.optimizer());
  t2.set_replica_sync(&dp2);
  std::vector<double> sent;
  double first = 0, last = 0;
  while (!t2.done()) {
    const StepMetrics sm = t2.step();
    if (sm.step == 1) first = sm.loss;
    last = sm.loss;
    sent.push_back(double(*sm.bytes_sent));
    ASSERT_TRUE(same_as_rank0(flat_params(*m2))) << "step " << sm.step;
  }
  EXPECT_LT(last, first);
  // 25% -> 1%: the payload shrinks roughly with the share (zstd aside).
  EXPECT_GT(sent.front(), 8 * sent.back());
  for (size_t s = 1; s < 6; ++s) EXPECT_LT(sent[s], sent[s - 1]) << "step " << s + 1;
  print0(fmt::format("top-k update 1% int8 with warm-up: bytes at step 1 {:.0f}, step {} {:.0f}",
                     sent.front(), steps2, sent.back()));
}

// DiLoCo with H = 3 over 7 steps (rounds end at 3, 6 and the last step, 7):
// replicas differ inside rounds and agree after each outer step, whose result
// equals anchor - lr * (d + mu * v) computed here in double from every rank's
// pre-sync parameters (gathered from a twin trainer without any sync). The
// local steps use the whole-batch second moment (variance_keep = 1/N).
TEST(Diloco, OuterStepMatchesHandComputationAndReplicasAgreeAtRoundEnds) {
  Communicator& c = world().comm();
  const int64_t steps = 7, H = 3;
  const double lr = 0.7, mu = 0.9;
  const float keep = 1.f / float(c.size());
  auto be = single_threaded_cpu();
  auto m = make_tiny(*be);
  Trainer t = make_trainer(*m, *be, options(steps));
  DilocoOptions d;
  d.inner_steps = H;
  d.outer = {lr, mu};
  d.total_steps = steps;
  d.variance_keep = keep;
  DilocoSync sync(c, *m, t.optimizer(), d);
  t.set_replica_sync(&sync);
  // The twin: the same local trainer, stepped without sync, reset to the
  // synced parameters after every outer step (so it sees what each rank saw).
  auto twin_m = make_tiny(*be);
  Trainer twin = make_trainer(*twin_m, *be, options(steps));
  OwnStepOnly own(keep);
  twin.set_replica_sync(&own);
  std::vector<double> anchor, v;
  {
    const auto p = flat_params(*m);
    anchor.assign(p.begin(), p.end());
    v.assign(p.size(), 0.0);
  }
  double worst = 0;
  int outer_steps = 0;
  while (!t.done()) {
    const StepMetrics sm = t.step();
    twin.step();
    const auto local = flat_params(*twin_m);
    const bool round_end = sm.step % H == 0 || sm.step == steps;
    EXPECT_EQ(sync.replicas_identical(), round_end) << "step " << sm.step;
    EXPECT_EQ(sync.last_step_stats().outer_step, round_end) << "step " << sm.step;
    if (!round_end) {
      // Different data on every rank: the replicas really drift apart.
      const bool same = same_as_rank0(flat_params(*m));  // a collective: every rank calls it
      if (c.rank() != 0) {
        EXPECT_FALSE(same) << "step " << sm.step;
      }
      EXPECT_EQ(flat_params(*m), local) << "a local step is the rank's own AdamW, step " << sm.step;
      continue;
    }
    ++outer_steps;
    const auto all = gather_rank_vectors(c, local);
    const auto got = flat_params(*m);
    ASSERT_TRUE(same_as_rank0(got)) << "step " << sm.step;
    for (size_t i = 0; i < got.size(); ++i) {
      double delta = 0;
      for (const auto& r : all) delta += anchor[i] - double(r[i]);
      delta /= double(all.size());
      v[i] = mu * v[i] + delta;
      anchor[i] -= lr * (delta + mu * v[i]);
      worst = std::max(worst, std::fabs(anchor[i] - double(got[i])));
    }
    // The twin continues from the synced parameters, like every rank.
    set_flat_params(*twin_m, got);
  }
  EXPECT_EQ(outer_steps, 3);
  EXPECT_LT(worst, 1e-5);
  print0(fmt::format("DiLoCo outer step vs hand computation (double): max |diff| {:.3g}", worst));
}

// dist.diloco_warmup_steps: the first W steps average (int8-compressed)
// gradients every step exactly as DataParallel does with the same codec (bit
// for bit), then rounds of H local steps start; replicas agree through the
// warm-up (its averaged gradients take plain AdamW, not the local steps'
// corrected second moment) and again at round ends.
TEST(Diloco, WarmupIsDataParallelThenRounds) {
  Communicator& c = world().comm();
  const int64_t steps = 9, H = 3, W = 4;
  const GradCodecConfig int8{GradCodecKind::Int8, 256, 0.01};
  auto be = single_threaded_cpu();
  auto m = make_tiny(*be);
  Trainer t = make_trainer(*m, *be, options(steps));
  DilocoOptions d;
  d.inner_steps = H;
  d.total_steps = steps;
  d.warmup_steps = W;
  d.codec = int8;
  d.variance_keep = 1.f / float(c.size());
  DilocoSync sync(c, *m, t.optimizer(), d);
  t.set_replica_sync(&sync);
  auto dp_m = make_tiny(*be);
  Trainer dp_t = make_trainer(*dp_m, *be, options(steps));
  DataParallelOptions dpo;
  dpo.codec = int8;
  DataParallel dp(c, *dp_m, dpo);
  dp_t.set_replica_sync(&dp);
  while (!t.done()) {
    const StepMetrics sm = t.step();
    const bool warm = sm.step <= W;
    const bool round_end = sm.step % H == 0 || sm.step == steps;
    EXPECT_EQ(sync.replicas_identical(), warm || round_end) << "step " << sm.step;
    EXPECT_EQ(sync.last_step_stats().outer_step, !warm && round_end) << "step " << sm.step;
    const bool same = same_as_rank0(flat_params(*m));
    if (warm || round_end) {
      EXPECT_TRUE(same) << "step " << sm.step;
    } else if (c.rank() != 0) {
      EXPECT_FALSE(same) << "step " << sm.step;
    }
    if (warm) {
      const StepMetrics dsm = dp_t.step();
      EXPECT_EQ(*sm.bytes_sent, *dsm.bytes_sent) << "step " << sm.step;
      EXPECT_EQ(flat_params(*m), flat_params(*dp_m)) << "warm-up step " << sm.step;
    }
  }
}

int main(int argc, char** argv) {
  return keel::dist::testing::mpi_test_main(argc, argv);
}
