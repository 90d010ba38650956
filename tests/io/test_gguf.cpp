// GGUF: the writer's bytes checked by hand against the specification, round
// trips of metadata and tensors (f32, f16, q8_0), and corrupt files (every
// truncation, bad magic/version/type/offset/count) each an IoError naming the
// file, never a crash.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/gguf_reader.h"
#include "io/gguf_writer.h"

using namespace keel;
using keel::io::GgufFile;
using keel::io::GgufWriter;

namespace {

std::string temp_path(const std::string& name) {
  const auto dir = std::filesystem::temp_directory_path() / "keel_test_gguf";
  std::filesystem::create_directories(dir);
  return (dir / name).string();
}

template <class T>
void put(std::string& s, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  s.append(b, sizeof(T));
}
void put_str(std::string& s, const std::string& v) {
  put<uint64_t>(s, v.size());
  s += v;
}

std::string parse_error(const std::string& bytes) {
  try {
    GgufFile::parse(bytes, "bad.gguf");
  } catch (const IoError& e) {
    return e.what();
  }
  return "";
}

// A small valid file written by GgufWriter.
std::string sample_file_bytes() {
  GgufWriter w;
  w.add_string("general.architecture", "llama");
  w.add_u32("llama.block_count", 2);
  w.add_f32("llama.rope.freq_base", 10000.f);
  w.add_bool("tokenizer.ggml.add_bos_token", false);
  w.add_string_array("tokenizer.ggml.tokens", {"a", "b",
                                               "\xc4\xa0"
                                               "c"});
  w.add_i32_array("tokenizer.ggml.token_type", {1, 1, 3});
  w.add_tensor("a.weight", Tensor::from_f32({1, 2, 3, 4, 5, 6}, Shape{2, 3}));
  w.add_tensor("b.weight", Tensor::from_f32({7, 8, 9}, Shape{3}));
  const std::string p = temp_path("sample.gguf");
  w.write(p);
  return io::read_file_bytes(p);
}

}  // namespace

TEST(Gguf, BytesMatchTheSpecificationByHand) {
  GgufWriter w;
  w.add_u32("k", 7);
  w.add_tensor("t", Tensor::from_f32({1.5f, -2.f}, Shape{1, 2}));
  const std::string p = temp_path("hand.gguf");
  w.write(p);

  std::string want;
  put<uint32_t>(want, 0x46554747);  // "GGUF"
  put<uint32_t>(want, 3);           // version
  put<uint64_t>(want, 1);           // tensors
  put<uint64_t>(want, 1);           // metadata pairs
  put_str(want, "k");
  put<uint32_t>(want, 4);  // u32
  put<uint32_t>(want, 7);
  put_str(want, "t");
  put<uint32_t>(want, 2);  // rank
  put<uint64_t>(want, 2);  // ne[0]: innermost first
  put<uint64_t>(want, 1);  // ne[1]
  put<uint32_t>(want, 0);  // GGML_TYPE_F32
  put<uint64_t>(want, 0);  // offset in the data section
  want.resize((want.size() + 31) / 32 * 32, '\0');
  put<float>(want, 1.5f);
  put<float>(want, -2.f);
  want.resize((want.size() + 31) / 32 * 32, '\0');
  EXPECT_EQ(io::read_file_bytes(p), want);
  EXPECT_EQ(std::string(want.data(), 4), "GGUF");
}

TEST(Gguf, RoundTripsMetadataAndTensors) {
  const GgufFile f = GgufFile::parse(sample_file_bytes(), "sample.gguf");
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.get_string("general.architecture"), "llama");
  EXPECT_EQ(f.get_int("llama.block_count"), 2);
  EXPECT_EQ(f.get_float("llama.rope.freq_base"), 10000.0);
  EXPECT_FALSE(f.get_bool("tokenizer.ggml.add_bos_token"));
  EXPECT_EQ(f.get_string_array("tokenizer.ggml.tokens"), (std::vector<std::string>{"a", "b",
                                                                                   "\xc4\xa0"
                                                                                   "c"}));
  EXPECT_EQ(f.get_int_array("tokenizer.ggml.token_type"), (std::vector<int64_t>{1, 1, 3}));
  ASSERT_EQ(f.tensors().size(), 2u);
  EXPECT_EQ(f.tensors()[0].ne, (std::vector<uint64_t>{3, 2}));
  EXPECT_EQ(f.tensor_info("a.weight").shape(), (Shape{2, 3}));
  EXPECT_EQ(f.tensors()[1].offset % 32, 0u);
  EXPECT_EQ(f.get("a.weight").to_f32_vector(), (std::vector<float>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(f.get("b.weight").to_f32_vector(), (std::vector<float>{7, 8, 9}));
  // Wrong-typed and missing keys name the key.
  try {
    f.get_int("general.architecture");
    FAIL();
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("general.architecture"), std::string::npos);
  }
  EXPECT_THROW(f.get_string("nope"), IoError);
  EXPECT_THROW(f.get("nope"), IoError);
}

TEST(Gguf, F16AndQ8_0TensorsRoundTrip) {
  std::vector<float> v(64);
  for (size_t i = 0; i < v.size(); ++i) v[i] = float(i) * 0.25f - 7.f;
  const Tensor f32 = Tensor::from_f32(v, Shape{2, 32});
  Tensor q = Tensor::zeros(Shape{2, 32}, DType::Q8_0);
  // Blocks by hand: d = amax/127, q = round(x/d).
  for (int b = 0; b < 2; ++b) {
    auto& blk = q.data<BlockQ8_0>()[b];
    float amax = 0;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(v[size_t(b * 32 + j)]));
    const float d = amax / 127.f;
    blk.d = f32_to_f16(d);
    for (int j = 0; j < 32; ++j) blk.qs[j] = int8_t(std::nearbyint(v[size_t(b * 32 + j)] / d));
  }
  GgufWriter w;
  w.add_tensor("h", f32.to(DType::F16));
  w.add_tensor("q", q);
  const std::string p = temp_path("quant.gguf");
  w.write(p);
  const GgufFile f = GgufFile::open(p);
  EXPECT_EQ(f.tensor_info("h").dtype, DType::F16);
  EXPECT_EQ(f.tensor_info("q").dtype, DType::Q8_0);
  EXPECT_EQ(f.tensor_info("q").nbytes, 2u * 34u);
  EXPECT_EQ(f.get_f32("h").to_f32_vector(), v);  // quarter steps are exact in f16
  const auto back = f.get_f32("q").to_f32_vector();
  for (size_t i = 0; i < v.size(); ++i) EXPECT_NEAR(back[i], v[i], 0.06) << i;
  // Rows that are not a multiple of 32 are fine for unblocked types.
  GgufWriter odd;
  EXPECT_NO_THROW(odd.add_tensor("y", Tensor::zeros(Shape{2, 16}, DType::F16)));
}

TEST(Gguf, WriterRefusesBadInput) {
  GgufWriter w;
  w.add_u32("k", 1);
  EXPECT_THROW(w.add_u32("k", 2), IoError);
  w.add_tensor("t", Tensor::from_f32({1}, Shape{1}));
  EXPECT_THROW(w.add_tensor("t", Tensor::from_f32({1}, Shape{1})), IoError);
  EXPECT_THROW(w.add_tensor(std::string(64, 'x'), Tensor::from_f32({1}, Shape{1})), IoError);
}

TEST(Gguf, EveryTruncationIsAnIoError) {
  const std::string good = sample_file_bytes();
  ASSERT_NO_THROW(GgufFile::parse(good, "good.gguf"));
  // The data section is the last 32-byte-aligned part; any cut before its end fails.
  for (size_t n = 0; n + 1 < good.size(); ++n) {
    const std::string cut = good.substr(0, n);
    bool threw = false;
    try {
      GgufFile::parse(cut, "cut.gguf");
    } catch (const IoError& e) {
      threw = true;
      EXPECT_NE(std::string(e.what()).find("cut.gguf"), std::string::npos);
    }
    // Only cuts inside the trailing padding after the last tensor can still be valid.
    if (n < good.size() - 32) {
      EXPECT_TRUE(threw) << "prefix of " << n << " bytes was accepted";
    }
  }
}

TEST(Gguf, CorruptHeadersNameTheProblem) {
  const std::string good = sample_file_bytes();
  std::string b = good;
  b[0] = 'X';
  EXPECT_NE(parse_error(b).find("not a GGUF file"), std::string::npos);
  b = good;
  b[4] = 9;  // version 9
  EXPECT_NE(parse_error(b).find("version 9"), std::string::npos);
  b = good;
  b[8] = char(0xff), b[9] = char(0xff), b[15] = 0x7f;  // absurd tensor count
  EXPECT_NE(parse_error(b).find("tensor count"), std::string::npos);
  b = good;
  b[16] = char(0xff), b[23] = 0x7f;  // absurd metadata count
  EXPECT_NE(parse_error(b).find("metadata count"), std::string::npos);

  // Hand-built files: unknown value type, huge array, bad tensor type, offset past the end.
  auto header = [](uint64_t nt, uint64_t nkv) {
    std::string s;
    put<uint32_t>(s, 0x46554747);
    put<uint32_t>(s, 3);
    put<uint64_t>(s, nt);
    put<uint64_t>(s, nkv);
    return s;
  };
  std::string s = header(0, 1);
  put_str(s, "key");
  put<uint32_t>(s, 99);
  put<uint64_t>(s, 0);
  EXPECT_NE(parse_error(s).find("unknown value type 99"), std::string::npos) << parse_error(s);

  s = header(0, 1);
  put_str(s, "arr");
  put<uint32_t>(s, 9);
  put<uint32_t>(s, 4);
  put<uint64_t>(s, uint64_t(1) << 60);
  EXPECT_NE(parse_error(s).find("cannot fit"), std::string::npos) << parse_error(s);

  auto one_tensor = [&](uint32_t type, uint64_t ne0, uint64_t offset) {
    std::string t = header(1, 0);
    put_str(t, "w");
    put<uint32_t>(t, 1);
    put<uint64_t>(t, ne0);
    put<uint32_t>(t, type);
    put<uint64_t>(t, offset);
    t.resize((t.size() + 31) / 32 * 32, '\0');
    t += std::string(64, '\0');
    return t;
  };
  EXPECT_NO_THROW(GgufFile::parse(one_tensor(0, 16, 0), "ok.gguf"));
  EXPECT_NE(parse_error(one_tensor(11, 256, 0)).find("ggml type 11"), std::string::npos);
  // q4_K: a 256-element row is one 144-byte block, more than the 64 bytes present.
  EXPECT_NE(parse_error(one_tensor(12, 256, 0)).find("tensor 'w' data [0, 144) runs past"),
            std::string::npos)
      << parse_error(one_tensor(12, 256, 0));
  EXPECT_NE(parse_error(one_tensor(12, 128, 0)).find("multiple of 256 (q4_K"), std::string::npos)
      << parse_error(one_tensor(12, 128, 0));
  EXPECT_NE(parse_error(one_tensor(0, 17, 0)).find("past the end"), std::string::npos);
  EXPECT_NE(parse_error(one_tensor(0, 4, 8)).find("alignment"), std::string::npos);
  EXPECT_NE(parse_error(one_tensor(8, 48, 0)).find("multiple of 32"), std::string::npos);
  EXPECT_NE(parse_error(one_tensor(0, 0, 0)).find("dimension"), std::string::npos);
}
