// The fault-injecting sync of a world of one (no replica sync inside): the
// trainer then clears gradients lazily and keeps the compute copies the update
// wrote, as it does with no sync at all, and gets bit-identical parameters;
// a parameter flipped after the update still reaches the bf16 weights the
// next forward reads.
#include <gtest/gtest.h>

#include <cstring>

#include "../train/train_test_util.h"
#include "backend/backend.h"
#include "resilience/fault_injector.h"
#include "resilience/fault_plan.h"
#include "resilience/injecting_sync.h"

using namespace keel;
using namespace keel::resilience;
using namespace keel::train;
using namespace keel::train::testing;

TEST(InjectingSync, AloneTrainsBitForBitLikeNoSync) {
  for (DType dt : {DType::F32, DType::BF16}) {
    auto be = backend::make_backend("cpu");
    be->set_threads(2);
    auto m1 = tiny_model(*be, 5, dt), m2 = tiny_model(*be, 5, dt);
    Trainer plain = make_trainer(*m1, *be, tiny_options(4, 2, 5));
    Trainer guarded = make_trainer(*m2, *be, tiny_options(4, 2, 5));
    FaultInjector injector(FaultPlan{}, 0, 1, nullptr);
    InjectingSync sync(nullptr, &injector);
    EXPECT_FALSE(sync.needs_zeroed_gradients());
    guarded.set_replica_sync(&sync);
    while (!plain.done()) {
      const StepMetrics a = plain.step(), b = guarded.step();
      EXPECT_EQ(a.loss, b.loss) << dtype_name(dt);
      EXPECT_EQ(a.grad_norm, b.grad_norm) << dtype_name(dt);
    }
    EXPECT_EQ(flat_params(*m1), flat_params(*m2)) << dtype_name(dt);
    if (dt != DType::BF16) continue;
    for (size_t i = 0; i < m1->parameters().size(); ++i) {
      const Tensor &c1 = m1->parameters()[i]->compute, &c2 = m2->parameters()[i]->compute;
      ASSERT_EQ(c1.nbytes(), c2.nbytes());
      EXPECT_EQ(0, std::memcmp(c1.raw(), c2.raw(), c1.nbytes())) << m1->parameters()[i]->name;
    }
  }
}

TEST(InjectingSync, AFlipAfterTheUpdateReachesTheBf16Weights) {
  auto be = backend::make_backend("cpu");
  auto m = tiny_model(*be, 5, DType::BF16);
  Trainer t = make_trainer(*m, *be, tiny_options(4, 1, 3));
  // Bit 30 of an f32 is the top of its exponent: the bf16 copy must change.
  FaultInjector injector(
      parse_fault_plan_entries("kind=bitflip,step=2,param=wte.weight,index=9,bit=30"), 0, 1,
      nullptr);
  InjectingSync sync(nullptr, &injector);
  t.set_replica_sync(&sync);
  t.step();
  EXPECT_FALSE(sync.changed_weights_after_update());
  t.step();
  EXPECT_TRUE(sync.changed_weights_after_update());
  nn::Parameter* wte = nullptr;
  for (nn::Parameter* p : m->parameters())
    if (p->name == "wte.weight") wte = p;
  ASSERT_NE(wte, nullptr);
  ASSERT_EQ(wte->compute.dtype(), DType::BF16);
  const float v = wte->value.data<float>()[9];
  EXPECT_EQ(wte->compute.data<uint16_t>()[9], f32_to_bf16(v)) << v;
}
