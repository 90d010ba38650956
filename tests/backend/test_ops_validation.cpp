// ops.h validation: every bad call throws KernelError whose message names the
// kernel, each tensor's dtype and shape, and what was expected; good calls pass
// through to the backend.
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "backend/ops.h"
#include "backend/ref/ref_backend.h"
#include "core/error.h"

namespace {

using keel::DType;
using keel::Shape;
using keel::Tensor;
namespace ops = keel::ops;

Tensor Z(const Shape& s, DType dt = DType::F32) {
  return Tensor::zeros(s, dt);
}

// Runs f, expecting a KernelError; returns its message.
std::string kernel_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const keel::KernelError& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected KernelError, got another exception: " << e.what();
    return "";
  }
  ADD_FAILURE() << "expected KernelError, nothing was thrown";
  return "";
}

void expect_contains(const std::string& msg, const std::vector<std::string>& parts) {
  for (const std::string& p : parts)
    EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
}

class OpsValidation : public ::testing::Test {
 protected:
  std::unique_ptr<keel::backend::Backend> be = keel::backend::make_ref_backend();
};

TEST_F(OpsValidation, MatmulInnerDimMismatch) {
  Tensor a = Z({4, 5}), b = Z({6, 3}), c = Z({4, 3});
  std::string m = kernel_error([&] { ops::matmul(*be, a, false, b, false, c); });
  EXPECT_EQ(m.rfind("[matmul] ", 0), 0u) << m;
  expect_contains(m, {"a f32[4, 5]", "b f32[6, 3]", "c f32[4, 3]", "inner dims"});
}

TEST_F(OpsValidation, MatmulWrongOutputShapeAndDtypes) {
  Tensor a = Z({4, 5}), b = Z({5, 3}), c = Z({3, 4});
  expect_contains(kernel_error([&] { ops::matmul(*be, a, false, b, false, c); }),
                  {"[matmul]", "c f32[3, 4]", "c must be 4x3"});
  Tensor bb = Z({5, 3}, DType::BF16), c2 = Z({4, 3});
  expect_contains(kernel_error([&] { ops::matmul(*be, a, false, bb, false, c2); }),
                  {"[matmul]", "a f32[4, 5]", "b bf16[5, 3]", "dtypes"});
  Tensor a3 = Z({2, 4, 5}), b3 = Z({3, 5, 3}), c3 = Z({2, 4, 3});
  expect_contains(kernel_error([&] { ops::matmul(*be, a3, false, b3, false, c3); }),
                  {"[matmul]", "b f32[3, 5, 3]", "batch"});
  Tensor a1 = Z({5});
  expect_contains(kernel_error([&] { ops::matmul(*be, a1, false, b, false, c2); }),
                  {"[matmul]", "a f32[5]", "rank"});
}

TEST_F(OpsValidation, MatmulValidCallsRun) {
  // [[1,2],[3,4]] @ [[5,6],[7,8]] = [[19,22],[43,50]]; batched with a shared 2-D b.
  Tensor a = Tensor::from_f32({1, 2, 3, 4, 1, 0, 0, 1}, {2, 2, 2});
  Tensor b = Tensor::from_f32({5, 6, 7, 8}, {2, 2});
  Tensor c = Z({2, 2, 2});
  ops::matmul(*be, a, false, b, false, c);
  EXPECT_EQ(c.to_f32_vector(), (std::vector<float>{19, 22, 43, 50, 5, 6, 7, 8}));
  Tensor ct = Z({2, 2});
  ops::matmul(*be, a.slice_rows(0, 1).reshape({2, 2}), true, b, true, ct);  // a^T b^T
  EXPECT_EQ(ct.to_f32_vector(), (std::vector<float>{23, 31, 34, 46}));
}

TEST_F(OpsValidation, LayerNormWeightDtypeAndShape) {
  Tensor x = Z({4, 7}), w = Z({8}, DType::BF16), b, y = Z({4, 7}), mean = Z({4}), rstd = Z({4});
  std::string m = kernel_error([&] { ops::layernorm_forward(*be, x, w, b, y, mean, rstd, 1e-5f); });
  EXPECT_EQ(m.rfind("[layernorm] ", 0), 0u) << m;
  expect_contains(m, {"x f32[4, 7]", "w bf16[8]", "b undefined", "w must be f32[7]", "C=7"});
  Tensor w2 = Z({7}), rstd_bad = Z({5});
  expect_contains(
      kernel_error([&] { ops::layernorm_forward(*be, x, w2, b, y, mean, rstd_bad, 1e-5f); }),
      {"[layernorm]", "rstd f32[5]", "rstd must be f32 with 4 elements"});
  Tensor dy = Z({4, 7}), dx = Z({4, 7}), dw_bad = Z({7}, DType::BF16), db;
  expect_contains(
      kernel_error([&] { ops::layernorm_backward(*be, dy, x, w2, mean, rstd, dx, dw_bad, db); }),
      {"[layernorm]", "dw bf16[7]", "dw must be f32[7]"});
}

TEST_F(OpsValidation, UnsupportedDtypeNamesBackend) {
  Tensor x = Z({2, 8}, DType::F16), w = Z({8}, DType::F16), y = Z({2, 8}, DType::F16),
         rstd = Z({2});
  std::string m = kernel_error([&] { ops::rmsnorm_forward(*be, x, w, y, rstd, 1e-5f); });
  expect_contains(m,
                  {"[rmsnorm] dtype f16 not supported by backend ref", "x f16[2, 8]", "w f16[8]"});
  Tensor q = Z({1, 2, 2, 4}, DType::F16), o = Z({1, 2, 2, 4}, DType::F16), lse = Z({1, 2, 2});
  expect_contains(kernel_error([&] { ops::attention_forward(*be, q, q, q, o, lse); }),
                  {"[attention] dtype f16 not supported by backend ref", "q f16[1, 2, 2, 4]"});
  Tensor p = Z({4}, DType::BF16), g = Z({4}), mm = Z({4}), vv = Z({4}), pb;
  expect_contains(kernel_error([&] { ops::adamw_update(*be, {}, p, g, mm, vv, pb); }),
                  {"[adamw]", "param bf16[4]", "param must be f32"});
}

TEST_F(OpsValidation, AdamWVarianceKeepOutsideUnitInterval) {
  Tensor p = Z({4}), g = Z({4}), mm = Z({4}), vv = Z({4}), pb;
  for (float keep : {0.f, 1.5f}) {
    keel::backend::AdamWArgs a;
    a.variance_keep = keep;
    expect_contains(kernel_error([&] { ops::adamw_update(*be, a, p, g, mm, vv, pb); }),
                    {"[adamw]", "variance_keep=", "must be in (0, 1]"});
  }
}

TEST_F(OpsValidation, AttentionShapes) {
  Tensor q = Z({1, 4, 6, 8}), k = Z({1, 4, 4, 8}), v = Z({1, 4, 4, 8}), o = Z({1, 4, 6, 8}),
         lse = Z({1, 6, 4});
  expect_contains(kernel_error([&] { ops::attention_forward(*be, q, k, v, o, lse); }),
                  {"[attention]", "q f32[1, 4, 6, 8]", "k f32[1, 4, 4, 8]", "NH=6", "NKV=4"});
  Tensor q2 = Z({1, 5, 4, 8}), o2 = Z({1, 5, 4, 8}), lse2 = Z({1, 4, 5});
  expect_contains(kernel_error([&] { ops::attention_forward(*be, q2, k, v, o2, lse2); }),
                  {"[attention]", "Tq=5 must be <= Tk=4"});
  Tensor q3 = Z({1, 4, 4, 8}), lse_bad = Z({1, 4, 4}, DType::BF16);
  expect_contains(kernel_error([&] { ops::attention_forward(*be, q3, k, v, q3, lse_bad); }),
                  {"[attention]", "lse bf16[1, 4, 4]", "lse must be f32[1, 4, 4]"});
}

TEST_F(OpsValidation, RopeOddHeadSize) {
  Tensor x = Z({1, 2, 2, 5}), y = Z({1, 2, 2, 5});
  expect_contains(kernel_error([&] { ops::rope_forward(*be, x, y, 0, 10000.f); }),
                  {"[rope]", "x f32[1, 2, 2, 5]", "HS=5 must be even"});
}

TEST_F(OpsValidation, ElementwiseMismatch) {
  Tensor x = Z({3, 4}), y = Z({4, 3}), yb = Z({3, 4}, DType::BF16);
  expect_contains(kernel_error([&] { ops::gelu_forward(*be, x, y); }),
                  {"[gelu]", "x f32[3, 4]", "y f32[4, 3]", "y must be f32[3, 4]"});
  expect_contains(kernel_error([&] { ops::add(*be, x, yb, x); }),
                  {"[add]", "b bf16[3, 4]", "b must be f32[3, 4]"});
  Tensor bias = Z({3});
  expect_contains(kernel_error([&] { ops::bias_add(*be, x, bias); }),
                  {"[bias_add]", "bias f32[3]", "bias must be f32[4]"});
}

TEST_F(OpsValidation, CrossEntropyTargets) {
  Tensor logits = Z({2, 5}), losses = Z({2}), lse = Z({2});
  Tensor t_bad = Tensor::from_i32({1, 5}, {2});
  expect_contains(
      kernel_error([&] { ops::cross_entropy_forward(*be, logits, t_bad, losses, lse); }),
      {"[cross_entropy]", "logits f32[2, 5]", "targets i32[2]", "targets[1] = 5"});
  Tensor t_f32 = Z({2});
  expect_contains(
      kernel_error([&] { ops::cross_entropy_forward(*be, logits, t_f32, losses, lse); }),
      {"[cross_entropy]", "targets f32[2]", "targets must be i32[2]"});
}

TEST_F(OpsValidation, EmbeddingIdsOutOfRange) {
  Tensor ids = Tensor::from_i32({0, 9}, {2}), table = Z({4, 3}), out = Z({2, 3});
  expect_contains(kernel_error([&] { ops::embedding_forward(*be, ids, table, out); }),
                  {"[embedding]", "ids i32[2]", "table f32[4, 3]", "ids[1] = 9"});
}

TEST_F(OpsValidation, QuantizeShapes) {
  Tensor w = Z({2, 40}), q = Z({2, 40}, DType::I8), scale;
  expect_contains(
      kernel_error([&] { ops::quantize(*be, w, q, scale); }),
      {"[quantize]", "w f32[2, 40]", "q i8[2, 40]", "scale undefined", "scale must be f32[2]"});
  Tensor x = Z({3, 64}), wq = Z({5, 32}, DType::Q8_0), y = Z({3, 5}), none;
  expect_contains(kernel_error([&] { ops::qmatmul(*be, x, wq, none, y); }),
                  {"[qmatmul]", "x f32[3, 64]", "wq q8_0[5, 32]", "K=32"});
  Tensor src = Z({2, 3}), dst = Z({3, 2}, DType::BF16);
  expect_contains(kernel_error([&] { ops::cast(*be, src, dst); }),
                  {"[cast]", "src f32[2, 3]", "dst bf16[3, 2]"});
}

TEST_F(OpsValidation, UndefinedRequiredTensorIsNamed) {
  Tensor x = Z({2, 4}), y;
  expect_contains(kernel_error([&] { ops::silu_forward(*be, x, y); }),
                  {"[silu]", "y undefined", "y is undefined"});
}

}  // namespace
