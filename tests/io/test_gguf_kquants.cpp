// The GGUF block codecs without a keel DType (q4_K, q5_K, q6_K, q5_0, q5_1):
// bytes and decoded floats equal llama.cpp's reference quantizers on inputs
// that reach every branch, round trips stay within each format's step, and
// files with such tensors write, read back, and refuse bad sizes by name.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <vector>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/gguf_kquants.h"
#include "io/gguf_reader.h"
#include "io/gguf_writer.h"

using namespace keel;
using keel::io::GgmlType;

namespace {

// 16 super-blocks, each a regime that drives the quantizers down another
// branch: signed uniform, all zeros, all positive (min clamps to 0), values
// under the all-zero threshold, one outlier, half zeros (sub-block scales of
// 0), large magnitudes, all negative. The generator uses only exact float
// steps, so the same numbers come out of any C compiler.
std::vector<float> regimes() {
  std::vector<float> x(4096);
  uint32_t st = 12345u;
  auto uni = [&] {
    st = st * 1664525u + 1013904223u;
    return float(int32_t(st >> 9)) * (1.0f / 8388608.0f);
  };
  for (int b = 0; b < 16; ++b)
    for (int i = 0; i < 256; ++i) {
      const float u = uni();
      float v;
      switch (b % 8) {
        case 0:
          v = 2 * u - 1;
          break;
        case 1:
          v = 0;
          break;
        case 2:
          v = 2 * u;
          break;
        case 3:
          v = (2 * u - 1) * 1e-20f;
          break;
        case 4:
          v = i == 77 ? 3.5f : (2 * u - 1) * 0.05f;
          break;
        case 5:
          v = i < 128 ? 0.f : 2 * u - 1;
          break;
        case 6:
          v = (2 * u - 1) * 1000.f;
          break;
        default:
          v = -u - 0.25f;
      }
      x[size_t(256 * b + i)] = v;
    }
  return x;
}

uint64_t fnv1a(const void* p, size_t n) {
  const auto* b = static_cast<const uint8_t*>(p);
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i) {
    h ^= b[i];
    h *= 1099511628211ull;
  }
  return h;
}

std::string temp_path(const std::string& name) {
  const auto dir = std::filesystem::temp_directory_path() / "keel_test_gguf_kquants";
  std::filesystem::create_directories(dir);
  return (dir / name).string();
}

const GgmlType kTypes[] = {GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K, GgmlType::Q5_0,
                           GgmlType::Q5_1};

}  // namespace

// The oracle: llama.cpp's ggml/src/ggml-quants.c (the copy node-llama-cpp
// 3.21.1 bundles) compiled with gcc -O2 -ffp-contract=off, quantize_row_*_ref
// then dequantize_row_* on regimes(), FNV-1a 64 of the block bytes and of the
// decoded floats. The bytes are a strict IEEE evaluation of llama.cpp's
// arithmetic: a build that fuses multiply-adds (-march with FMA and GCC's
// default contraction) picks another q4_K fit in the outlier block (159 of
// 2304 bytes differ), a difference between llama.cpp builds, not a keel one.
TEST(GgufKQuants, BytesAndDecodedFloatsEqualLlamaCppReference) {
  struct Want {
    GgmlType t;
    uint64_t bytes, floats;
  };
  const Want want[] = {
      {GgmlType::Q4_K, 0x67a3ff16d440f92bull, 0x1e3022ccee388f2aull},
      {GgmlType::Q5_K, 0x81b095a18c68f47cull, 0x625efd8017cd29eaull},
      {GgmlType::Q6_K, 0x6af53a4083c92731ull, 0xd1ad0e65aa08f029ull},
      {GgmlType::Q5_0, 0x119cb839cece07cbull, 0xd60c45de5bd84f14ull},
      {GgmlType::Q5_1, 0x394d8b1795da308full, 0xffd02bd4d923c1e2ull},
  };
  const std::vector<float> x = regimes();
  for (const auto& w : want) {
    const std::string q = io::ggml_quantize(w.t, x.data(), int64_t(x.size()));
    const size_t blocks = x.size() / size_t(io::ggml_block_elems(w.t));
    ASSERT_EQ(q.size(), blocks * io::ggml_block_bytes(w.t)) << io::ggml_type_name(w.t);
    EXPECT_EQ(fnv1a(q.data(), q.size()), w.bytes) << io::ggml_type_name(w.t) << " bytes";
    std::vector<float> y(x.size());
    io::ggml_dequantize(w.t, q.data(), int64_t(y.size()), y.data());
    EXPECT_EQ(fnv1a(y.data(), y.size() * sizeof(float)), w.floats)
        << io::ggml_type_name(w.t) << " decoded floats";
  }
}

// Independent of the oracle: every decoded value sits within the format's
// step of the input (amax of its block over the level count, and the 6-bit
// scale rounding on top for the k-quants), and exact zeros stay zero.
TEST(GgufKQuants, RoundTripStaysWithinTheStep) {
  const std::vector<float> x = regimes();
  for (const GgmlType t : kTypes) {
    const std::string q = io::ggml_quantize(t, x.data(), int64_t(x.size()));
    std::vector<float> y(x.size());
    io::ggml_dequantize(t, q.data(), int64_t(y.size()), y.data());
    const int levels = t == GgmlType::Q4_K ? 15 : t == GgmlType::Q6_K ? 63 : 31;
    for (size_t b = 0; b < x.size() / 256; ++b) {
      float lo = 0, hi = 0;
      for (size_t i = 0; i < 256; ++i) {
        lo = std::min(lo, x[256 * b + i]);
        hi = std::max(hi, x[256 * b + i]);
      }
      // A sub-block's scale can land a level away from its best after 6-bit
      // rounding; two steps over the super-block's range bound every format,
      // plus a floor for scales below f16's range (the 1e-20 block decodes to 0).
      const float tol = 2 * (hi - lo) / float(levels) + 1e-6f;
      for (size_t i = 0; i < 256; ++i) {
        const size_t k = 256 * b + i;
        ASSERT_LE(std::fabs(y[k] - x[k]), tol) << io::ggml_type_name(t) << " element " << k;
        if (b % 8 == 1) {
          ASSERT_EQ(y[k], 0.f) << io::ggml_type_name(t) << " element " << k;
        }
      }
    }
  }
}

TEST(GgufKQuants, FileRoundTripAndRefusals) {
  const std::vector<float> x = regimes();
  const std::string path = temp_path("k.gguf");
  io::GgufWriter w;
  w.add_string("general.architecture", "test");
  for (const GgmlType t : kTypes)
    w.add_tensor_bytes(std::string("w.") + io::ggml_type_name(t), Shape{8, 512}, t,
                       io::ggml_quantize(t, x.data(), int64_t(x.size())));
  w.write(path);
  const io::GgufFile f = io::GgufFile::open(path);
  for (const GgmlType t : kTypes) {
    const std::string name = std::string("w.") + io::ggml_type_name(t);
    const auto& info = f.tensor_info(name);
    EXPECT_EQ(info.ggml, t);
    EXPECT_EQ(info.shape(), (Shape{8, 512}));
    const Tensor got = f.get_f32(name);
    std::vector<float> want(x.size());
    const std::string q = io::ggml_quantize(t, x.data(), int64_t(x.size()));
    io::ggml_dequantize(t, q.data(), int64_t(want.size()), want.data());
    EXPECT_EQ(std::memcmp(got.raw(), want.data(), want.size() * 4), 0) << name;
    try {
      (void)f.get(name);
      ADD_FAILURE() << name << ": get() of a raw block type must throw";
    } catch (const IoError& e) {
      EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
    }
  }
  // The writer refuses a wrong byte count or a row that is not whole blocks.
  io::GgufWriter bad;
  EXPECT_THROW(bad.add_tensor_bytes("short", Shape{1, 256}, GgmlType::Q4_K, std::string(143, 0)),
               IoError);
  EXPECT_THROW(bad.add_tensor_bytes("rows", Shape{2, 128}, GgmlType::Q4_K, std::string(144, 0)),
               IoError);

  // A file whose k-quant data is cut short is refused naming the tensor.
  std::string bytes = io::read_file_bytes(path);
  bytes.resize(bytes.size() - 100);
  try {
    (void)io::GgufFile::parse(bytes, "cut.gguf");
    ADD_FAILURE() << "a truncated k-quant tensor must be refused";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("'w.q5_1'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("cut.gguf"), std::string::npos) << e.what();
  }
}
