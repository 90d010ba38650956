// Tensor and Shape: construction, reshape / slice_rows / clone / to, and
// errors that name the shapes involved.
#include <gtest/gtest.h>

#include <string>

#include "core/arena.h"
#include "core/error.h"
#include "core/tensor.h"

namespace keel {
namespace {

// Runs f, expecting a keel::Error whose message contains every one of parts.
template <class F>
void expect_error(F f, std::initializer_list<const char*> parts) {
  try {
    f();
    FAIL() << "no error thrown";
  } catch (const Error& e) {
    for (const char* p : parts)
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos)
          << "'" << e.what() << "' lacks '" << p << "'";
  }
}

TEST(Shape, NumelStridesAndText) {
  Shape s{2, 3, 4};
  EXPECT_EQ(s.numel(), 24);
  EXPECT_EQ(s.rank(), 3);
  EXPECT_EQ(s[-1], 4);
  EXPECT_EQ(s.contiguous_strides(), (std::vector<int64_t>{12, 4, 1}));
  EXPECT_EQ(s.str(), "[2, 3, 4]");
  EXPECT_EQ(Shape{}.numel(), 1);
  EXPECT_EQ((Shape{5, 0}).numel(), 0);
}

TEST(Tensor, ZerosFromAndDesc) {
  Tensor t = Tensor::zeros({2, 3}, DType::BF16);
  EXPECT_EQ(t.numel(), 6);
  EXPECT_EQ(t.nbytes(), 12u);
  EXPECT_EQ(t.desc(), "bf16[2, 3]");
  for (float v : t.to_f32_vector()) EXPECT_EQ(v, 0.f);
  Tensor f = Tensor::from_f32({1, 2, 3, 4, 5, 6}, {3, 2});
  EXPECT_EQ(f.data<float>()[5], 6.f);
  expect_error([] { Tensor::from_f32({1, 2, 3}, {2, 2}); }, {"3 values", "[2, 2]"});
  expect_error([] { Tensor::zeros({2, -1}, DType::F32); }, {"[2, -1]"});
  expect_error([] { Tensor::zeros({4, 33}, DType::Q4_0); }, {"q4_0", "[4, 33]", "32"});
  EXPECT_EQ(Tensor::zeros({4, 64}, DType::Q8_0).nbytes(), 4u * 2 * 34);
}

TEST(Tensor, ReshapeSharesBytesAndNamesShapesOnError) {
  Tensor t = Tensor::from_f32({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor r = t.reshape({3, 2});
  EXPECT_EQ(r.shape(), (Shape{3, 2}));
  EXPECT_EQ(r.raw(), t.raw());
  r.data<float>()[0] = 9;
  EXPECT_EQ(t.data<float>()[0], 9.f);
  expect_error([&] { t.reshape({4, 2}); }, {"f32[2, 3]", "[4, 2]"});
}

TEST(Tensor, SliceRows) {
  Tensor t = Tensor::from_f32({0, 1, 2, 3, 4, 5, 6, 7}, {4, 2});
  Tensor s = t.slice_rows(1, 2);
  EXPECT_EQ(s.shape(), (Shape{2, 2}));
  EXPECT_EQ(s.to_f32_vector(), (std::vector<float>{2, 3, 4, 5}));
  s.data<float>()[0] = 20;  // a view: writes land in t
  EXPECT_EQ(t.data<float>()[2], 20.f);
  Tensor ss = s.slice_rows(1, 1);  // slice of a slice keeps the offset
  EXPECT_EQ(ss.to_f32_vector(), (std::vector<float>{4, 5}));
  EXPECT_EQ(t.slice_rows(4, 0).numel(), 0);
  expect_error([&] { t.slice_rows(3, 2); }, {"[3, 5)", "f32[4, 2]"});
  expect_error([&] { t.slice_rows(-1, 1); }, {"f32[4, 2]"});
  // Blocked rows: offsets in whole blocks.
  Tensor q = Tensor::zeros({3, 64}, DType::Q8_0);
  EXPECT_EQ(static_cast<char*>(q.slice_rows(2, 1).raw()) - static_cast<char*>(q.raw()), 2 * 2 * 34);
}

TEST(Tensor, CloneIsDeep) {
  Tensor t = Tensor::from_f32({1, 2, 3}, {3});
  Tensor c = t.clone();
  EXPECT_NE(c.raw(), t.raw());
  c.data<float>()[0] = 7;
  EXPECT_EQ(t.data<float>()[0], 1.f);
  Tensor s = Tensor::from_f32({1, 2, 3, 4}, {2, 2}).slice_rows(1, 1).clone();
  EXPECT_EQ(s.to_f32_vector(), (std::vector<float>{3, 4}));
}

TEST(Tensor, ToConvertsWithRounding) {
  Tensor t = Tensor::from_f32({1.f + 0x1p-8f, 1.f + 0x3p-8f, -2.5f, 65520.f}, {4});
  Tensor b = t.to(DType::BF16);
  EXPECT_EQ(b.dtype(), DType::BF16);
  EXPECT_EQ(b.to_f32_vector(), (std::vector<float>{1.f, 1.f + 0x1p-6f, -2.5f, 65536.f}));
  Tensor h = t.to(DType::F16);
  std::vector<float> hv = h.to_f32_vector();
  EXPECT_EQ(hv[0], 1.f + 0x1p-8f);  // exact in f16
  EXPECT_TRUE(std::isinf(hv[3]));
  Tensor back = b.to(DType::F32);
  EXPECT_EQ(back.to_f32_vector(), b.to_f32_vector());
  Tensor i = Tensor::from_i32({-3, 4}, {2});
  EXPECT_EQ(i.to(DType::F32).to_f32_vector(), (std::vector<float>{-3, 4}));
  expect_error([&] { t.to(DType::Q4_0); }, {"q4_0"});
}

TEST(Tensor, ViewAndArena) {
  float buf[6] = {1, 2, 3, 4, 5, 6};
  Tensor v = Tensor::view(buf, {2, 3}, DType::F32);
  EXPECT_EQ(v.raw(), buf);
  v.fill_zero();
  EXPECT_EQ(buf[5], 0.f);
  Arena arena(1 << 16);
  Tensor a = Tensor::in_arena(arena, {5, 7}, DType::F32);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a.raw()) % 64, 0u);
  EXPECT_GE(arena.used(), 5u * 7 * 4);
  EXPECT_TRUE(a.is_contiguous());
}

}  // namespace
}  // namespace keel
