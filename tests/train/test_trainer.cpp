// The trainer on a synthetic corpus: loss falls, gradient accumulation equals
// a larger batch, runs are bit-reproducible, and the state it exposes is
// enough to continue a run bit-exactly in a fresh trainer.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "backend/backend.h"
#include "train/adamw.h"
#include "train_test_util.h"

using namespace keel;
using namespace keel::train;
using namespace keel::train::testing;

TEST(Trainer, LossDecreasesOnRef) {
  auto be = backend::make_backend("ref");
  auto m = tiny_model(*be);
  Trainer t = make_trainer(*m, *be, tiny_options(4, 1, 40));
  const double val0 = t.evaluate();
  std::vector<double> losses;
  while (!t.done()) losses.push_back(t.step().loss);
  ASSERT_EQ(losses.size(), 40u);
  const double first = (losses[0] + losses[1] + losses[2]) / 3,
               last = (losses[37] + losses[38] + losses[39]) / 3;
  EXPECT_NEAR(first, std::log(double(kVocab)), 0.3);  // starts near uniform
  EXPECT_LT(last, first - 1.0) << "first " << first << " last " << last;
  ASSERT_TRUE(t.last_val_loss().has_value());  // evaluated at the last step
  EXPECT_LT(*t.last_val_loss(), val0 - 1.0);
  EXPECT_EQ(t.step_count(), 40);
  EXPECT_EQ(t.optimizer().t(), 40);
}

TEST(Trainer, GradAccumulationEqualsLargerBatch) {
  auto be = backend::make_backend("cpu");
  auto ma = tiny_model(*be), mb = tiny_model(*be);
  TrainerOptions oa = tiny_options(4, 2, 3), ob = tiny_options(8, 1, 3);
  // A larger eps keeps Adam's update smooth in the gradient, so rounding-level
  // gradient differences stay rounding-level in the parameters.
  oa.adamw.eps = ob.adamw.eps = 1e-3;
  Trainer ta = make_trainer(*ma, *be, oa), tb = make_trainer(*mb, *be, ob);
  for (int s = 0; s < 3; ++s) {
    const StepMetrics a = ta.step(), b = tb.step();
    EXPECT_NEAR(a.loss, b.loss, 1e-5) << "step " << s;  // same rows were read
    EXPECT_NEAR(a.grad_norm, b.grad_norm, 1e-5 * b.grad_norm) << "step " << s;
  }
  const auto pa = flat_params(*ma), pb = flat_params(*mb), p0 = flat_params(*tiny_model(*be));
  ASSERT_EQ(pa.size(), pb.size());
  double max_diff = 0, max_move = 0;
  for (size_t i = 0; i < pa.size(); ++i) {
    max_diff = std::max(max_diff, double(std::fabs(pa[i] - pb[i])));
    max_move = std::max(max_move, double(std::fabs(pb[i] - p0[i])));
  }
  EXPECT_LT(max_diff, 2e-6) << "max |a - b| " << max_diff;
  EXPECT_GT(max_move, 1e-3);  // the parameters did move
}

TEST(Trainer, GradAccumulationReadsTheRowsOfTheLargerBatch) {
  auto be = backend::make_backend("cpu");
  auto m = tiny_model(*be);
  Trainer a = make_trainer(*m, *be, tiny_options(4, 2, 3));
  Trainer b = make_trainer(*m, *be, tiny_options(8, 1, 3));
  // Micro-batch k of step s covers global rows [(s*2 + k) * 4, +4) = rows of b's step s.
  EXPECT_EQ(a.micro_batch_index(2, 1), 5u);
  EXPECT_EQ(b.micro_batch_index(2, 0), 2u);
  TrainerOptions dp = tiny_options(4, 2, 3);
  dp.data_world = 3;
  dp.data_rank = 2;
  Trainer c = make_trainer(*m, *be, dp);
  EXPECT_EQ(c.micro_batch_index(1, 1), 1u * 6 + 2 * 2 + 1);
}

TEST(Trainer, RunsAreBitIdentical) {
  for (DType dt : {DType::F32, DType::BF16}) {
    auto be = backend::make_backend("cpu");
    be->set_threads(2);
    auto m1 = tiny_model(*be, 5, dt), m2 = tiny_model(*be, 5, dt);
    Trainer t1 = make_trainer(*m1, *be, tiny_options(4, 2, 5)),
            t2 = make_trainer(*m2, *be, tiny_options(4, 2, 5));
    while (!t1.done()) {
      const StepMetrics a = t1.step(), b = t2.step();
      EXPECT_EQ(a.loss, b.loss);
      EXPECT_EQ(a.grad_norm, b.grad_norm);
    }
    while (!t2.done()) t2.step();
    const auto p1 = flat_params(*m1), p2 = flat_params(*m2);
    ASSERT_EQ(p1.size(), p2.size());
    EXPECT_EQ(0, std::memcmp(p1.data(), p2.data(), p1.size() * sizeof(float))) << dtype_name(dt);
    for (size_t i = 0; i < t1.optimizer().m().size(); ++i) {
      EXPECT_EQ(t1.optimizer().m()[i].to_f32_vector(), t2.optimizer().m()[i].to_f32_vector());
      EXPECT_EQ(t1.optimizer().v()[i].to_f32_vector(), t2.optimizer().v()[i].to_f32_vector());
    }
  }
}

// The update writes the bf16 weights forward reads in its own pass; they must
// be exactly the master weights rounded, as a separate cast would give.
TEST(Trainer, Bf16ComputeWeightsAreTheRoundedMasterWeights) {
  auto be = backend::make_backend("cpu");
  auto m = tiny_model(*be, 5, DType::BF16);
  Trainer t = make_trainer(*m, *be, tiny_options(4, 1, 3));
  const std::vector<float> before = flat_params(*m);
  while (!t.done()) t.step();
  EXPECT_NE(before, flat_params(*m));
  for (nn::Parameter* p : m->parameters()) {
    ASSERT_EQ(p->compute.dtype(), DType::BF16) << p->name;
    const std::vector<float> v = p->value.to_f32_vector();
    const uint16_t* c = p->compute.data<uint16_t>();
    for (size_t i = 0; i < v.size(); ++i)
      ASSERT_EQ(c[i], f32_to_bf16(v[i])) << p->name << "[" << i << "]";
  }
}

TEST(Trainer, ExposedStateContinuesARunBitExactly) {
  auto be = backend::make_backend("cpu");
  auto ref = tiny_model(*be);
  Trainer straight = make_trainer(*ref, *be, tiny_options(4, 1, 6));
  while (!straight.done()) straight.step();

  auto m1 = tiny_model(*be);
  Trainer first = make_trainer(*m1, *be, tiny_options(4, 1, 6));
  for (int i = 0; i < 3; ++i) first.step();
  // A fresh model and trainer, with the state copied over as a checkpoint would.
  auto m2 = tiny_model(*be, 12345);
  Trainer second = make_trainer(*m2, *be, tiny_options(4, 1, 6));
  auto src = m1->parameters(), dst = m2->parameters();
  for (size_t i = 0; i < src.size(); ++i) {
    std::memcpy(dst[i]->value.raw(), src[i]->value.raw(), src[i]->value.nbytes());
    std::memcpy(second.optimizer().m()[i].raw(), first.optimizer().m()[i].raw(),
                src[i]->value.nbytes());
    std::memcpy(second.optimizer().v()[i].raw(), first.optimizer().v()[i].raw(),
                src[i]->value.nbytes());
  }
  m2->sync_compute_weights();
  second.optimizer().set_t(first.optimizer().t());
  second.set_step_count(first.step_count());
  while (!second.done()) second.step();
  const auto a = flat_params(*ref), b = flat_params(*m2);
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));
}

TEST(Trainer, ClippingBoundsTheUpdate) {
  auto be = backend::make_backend("cpu");
  auto m = tiny_model(*be);
  TrainerOptions o = tiny_options(4, 1, 1);
  o.grad_clip =
      1e-6;  // the clipped gradient is tiny but Adam normalises it: check grad_norm is the raw norm
  Trainer t = make_trainer(*m, *be, o);
  const StepMetrics s = t.step();
  EXPECT_GT(s.grad_norm, 1e-3);
  EXPECT_FALSE(s.skipped);
}

TEST(AdamW, MatchesTheFormula) {
  auto be = backend::make_backend("cpu");
  nn::Parameter p{"w",
                  Tensor::from_f32({0.5f, -1.f, 2.f}, {3}),
                  Tensor::from_f32({0.1f, -0.2f, 0.f}, {3}),
                  {},
                  true};
  nn::Parameter q{"b", Tensor::from_f32({1.f}, {1}), Tensor::from_f32({0.3f}, {1}), {}, false};
  AdamW opt(*be, {&p, &q}, AdamWConfig{0.9, 0.99, 1e-8, 0.1});
  const double lr = 0.01, scale = 0.5;
  opt.step(lr, float(scale));
  opt.step(lr, float(scale));
  // Two steps of decoupled AdamW by hand, in double.
  auto expect = [&](double w, double g, double wd) {
    double m = 0, v = 0;
    for (int t = 1; t <= 2; ++t) {
      const double gs = g * scale;
      m = 0.9 * m + 0.1 * gs;
      v = 0.99 * v + 0.01 * gs * gs;
      const double mh = m / (1 - std::pow(0.9, t)), vh = v / (1 - std::pow(0.99, t));
      w -= lr * (mh / (std::sqrt(vh) + 1e-8) + wd * w);
    }
    return w;
  };
  const auto pv = p.value.to_f32_vector();
  EXPECT_NEAR(pv[0], expect(0.5, 0.1, 0.1), 1e-6);
  EXPECT_NEAR(pv[1], expect(-1.0, -0.2, 0.1), 1e-6);
  EXPECT_NEAR(pv[2], expect(2.0, 0.0, 0.1), 1e-6);                       // decay alone
  EXPECT_NEAR(q.value.to_f32_vector()[0], expect(1.0, 0.3, 0.0), 1e-6);  // no decay
  EXPECT_EQ(opt.t(), 2);
  EXPECT_NEAR(grad_global_norm(*be, {&p, &q}), std::sqrt(0.01 + 0.04 + 0.09), 1e-7);
}
