// safetensors: round trips in every stored dtype, the byte layout checked by
// hand against the format, and one test per kind of corruption, each an
// IoError naming the file and the tensor or offset.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"

using namespace keel;
using keel::io::SafetensorsFile;

namespace {

std::string temp_path(const std::string& name) {
  const auto dir = std::filesystem::temp_directory_path() / "keel_test_safetensors";
  std::filesystem::create_directories(dir);
  return (dir / name).string();
}

// A file with the given header JSON text and data bytes.
std::string raw_file(const std::string& name, const std::string& header, const std::string& data) {
  std::string bytes(8, '\0');
  const uint64_t n = header.size();
  std::memcpy(bytes.data(), &n, 8);
  bytes += header + data;
  const std::string p = temp_path(name);
  io::write_file_atomic(p, bytes);
  return p;
}

std::string open_error(const std::string& path) {
  try {
    SafetensorsFile::open(path);
  } catch (const IoError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Safetensors, RoundTripEveryDtype) {
  Tensor f32 = Tensor::from_f32({1.5f, -2.f, 3.25f, 0.f, 1e-30f, -7.f}, {2, 3});
  Tensor bf16 = f32.to(DType::BF16);
  Tensor f16 = f32.to(DType::F16);
  Tensor i32 = Tensor::from_i32({1, -2, 2147483647}, {3});
  Tensor i8 = Tensor::zeros({2, 2}, DType::I8);
  i8.data<int8_t>()[1] = -128;
  i8.data<int8_t>()[3] = 127;
  Tensor empty = Tensor::zeros({0, 4}, DType::F32);
  const std::string p = temp_path("roundtrip.safetensors");
  io::write_safetensors(
      p, {{"w.f32", f32}, {"w.bf16", bf16}, {"w.f16", f16}, {"ids", i32}, {"q", i8}, {"e", empty}},
      {{"format", "pt"}, {"note", "x"}});
  const auto f = SafetensorsFile::open(p);
  ASSERT_EQ(f.entries().size(), 6u);
  EXPECT_EQ(f.entries()[0].name, "w.f32");  // data order = write order
  EXPECT_EQ(f.metadata().at("note"), "x");
  for (const auto& [name, t] : std::vector<std::pair<std::string, Tensor>>{{"w.f32", f32},
                                                                           {"w.bf16", bf16},
                                                                           {"w.f16", f16},
                                                                           {"ids", i32},
                                                                           {"q", i8},
                                                                           {"e", empty}}) {
    const Tensor g = f.get(name);
    EXPECT_EQ(g.dtype(), t.dtype()) << name;
    EXPECT_EQ(g.shape(), t.shape()) << name;
    EXPECT_EQ(0, std::memcmp(g.raw(), t.raw(), t.nbytes())) << name;
  }
  Tensor dst = Tensor::zeros({2, 3}, DType::F32);
  f.read_into("w.f32", dst);
  EXPECT_EQ(dst.to_f32_vector(), f32.to_f32_vector());
  Tensor wrong = Tensor::zeros({3, 2}, DType::F32);
  EXPECT_THROW(f.read_into("w.f32", wrong), IoError);
  EXPECT_THROW(f.get("absent"), IoError);
  // No temporary file is left behind.
  for (const auto& e : std::filesystem::directory_iterator(std::filesystem::path(p).parent_path()))
    EXPECT_EQ(e.path().string().find(".tmp."), std::string::npos) << e.path();
}

TEST(Safetensors, ByteLayoutFollowsTheFormat) {
  Tensor a = Tensor::from_f32({1.f, 2.f, 3.f}, {3});
  Tensor b = Tensor::from_i32({7, 8}, {1, 2});
  const std::string p = temp_path("layout.safetensors");
  io::write_safetensors(p, {{"a", a}, {"b", b}});
  const std::string bytes = io::read_file_bytes(p);
  uint64_t n;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ((8 + n) % 8, 0u);  // data section aligned
  const auto h = nlohmann::json::parse(bytes.substr(8, n));
  EXPECT_EQ(h["a"]["dtype"], "F32");
  EXPECT_EQ(h["a"]["shape"], nlohmann::json::array({3}));
  EXPECT_EQ(h["a"]["data_offsets"], nlohmann::json::array({0, 12}));
  EXPECT_EQ(h["b"]["dtype"], "I32");
  EXPECT_EQ(h["b"]["data_offsets"], nlohmann::json::array({12, 20}));
  ASSERT_EQ(bytes.size(), 8 + n + 20);
  float x[3];
  std::memcpy(x, bytes.data() + 8 + n, 12);
  EXPECT_EQ(x[2], 3.f);
  int32_t y[2];
  std::memcpy(y, bytes.data() + 8 + n + 12, 8);
  EXPECT_EQ(y[1], 8);
}

TEST(Safetensors, WriterRejectsBadInput) {
  Tensor a = Tensor::from_f32({1.f}, {1});
  EXPECT_THROW(io::write_safetensors(temp_path("dup.safetensors"), {{"a", a}, {"a", a}}), IoError);
  EXPECT_THROW(io::write_safetensors(temp_path("noname.safetensors"), {{"", a}}), IoError);
  EXPECT_THROW(io::write_safetensors("/nonexistent_dir/x.safetensors", {{"a", a}}), IoError);
}

TEST(Safetensors, CorruptionErrors) {
  const std::string good_data(12, '\0');
  const std::string ok_hdr = R"({"t":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}})";
  EXPECT_EQ(open_error(raw_file("ok.safetensors", ok_hdr, good_data)), "");

  struct Case {
    std::string name, header, data, expect;
  };
  const std::vector<Case> cases = {
      {"huge_header", "", "", "header length"},
      {"bad_json", R"({"t":{"dtype":"F32",)", good_data, "malformed"},
      {"not_object", "[1,2]", "", "not a JSON object"},
      {"bad_dtype", R"({"t":{"dtype":"F99","shape":[3],"data_offsets":[0,12]}})", good_data,
       "tensor 't': unsupported dtype 'F99'"},
      {"size_mismatch", R"({"t":{"dtype":"F32","shape":[4],"data_offsets":[0,12]}})", good_data,
       "tensor 't': data_offsets [0, 12] hold 12 bytes but F32 [4] needs 16"},
      {"out_of_bounds", R"({"t":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", good_data,
       "tensor 't': data_offsets [0, 16] run past the end"},
      {"reversed", R"({"t":{"dtype":"F32","shape":[0],"data_offsets":[12,0]}})", good_data,
       "end before begin"},
      {"gap", R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", good_data,
       "tensor 't': data begins at 4 but the previous tensor ends at 0"},
      {"overlap",
       R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
       good_data, "overlapping"},
      {"trailing", ok_hdr, good_data + "xxxx",
       "the tensors cover 12 bytes but the data section holds 16"},
      {"bad_shape", R"({"t":{"dtype":"F32","shape":[-3],"data_offsets":[0,12]}})", good_data,
       "tensor 't': shape entry -3"},
      {"missing_offsets", R"({"t":{"dtype":"F32","shape":[3]}})", good_data,
       "tensor 't': 'data_offsets'"},
      {"extra_field", R"({"t":{"dtype":"F32","shape":[3],"data_offsets":[0,12],"x":1}})", good_data,
       "unknown field 'x'"},
      {"bad_metadata",
       R"({"__metadata__":{"a":1},"t":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}})",
       good_data, "__metadata__ field 'a'"},
  };
  for (const auto& c : cases) {
    std::string path;
    if (c.name == "huge_header") {
      std::string bytes(8, '\0');
      const uint64_t n = 1000;
      std::memcpy(bytes.data(), &n, 8);
      path = temp_path("huge_header.safetensors");
      io::write_file_atomic(path, bytes + "{}");
    } else {
      path = raw_file(c.name + ".safetensors", c.header, c.data);
    }
    const std::string e = open_error(path);
    EXPECT_NE(e.find(path), std::string::npos) << c.name << ": " << e;
    EXPECT_NE(e.find(c.expect), std::string::npos) << c.name << ": " << e;
  }
  // Too short for the length field; missing file.
  const std::string shortp = temp_path("short.safetensors");
  io::write_file_atomic(shortp, "abc");
  EXPECT_NE(open_error(shortp).find("too short"), std::string::npos);
  EXPECT_NE(open_error(temp_path("absent.safetensors")).find("absent.safetensors"),
            std::string::npos);
}

// Regression: a shape whose byte size wraps 2^64 (here 4 x 2^60 F32 = 2^64
// bytes, which wrapped to 0) once matched an empty data range, and the tiny
// tensor it produced was written far past its end by the export transposes.
// Every such file must be refused at open, naming the file and the tensor.
TEST(Safetensors, ShapeWhoseByteSizeWrapsIsRejected) {
  const std::vector<std::string> shapes = {"[4,1152921504606846976]", "[1073741824,1073741824,4]",
                                           "[281474976710657]"};
  for (const auto& shape : shapes) {
    const std::string hdr =
        R"({"w":{"dtype":"F32","shape":)" + shape + R"(,"data_offsets":[0,0]}})";
    const std::string path = raw_file("wrap.safetensors", hdr, "");
    const std::string e = open_error(path);
    EXPECT_NE(e.find(path), std::string::npos) << shape << ": " << e;
    EXPECT_NE(e.find("tensor 'w'"), std::string::npos) << shape << ": " << e;
    EXPECT_NE(e.find("more than 2^48 elements"), std::string::npos) << shape << ": " << e;
  }
  // The largest allowed count still needs its full byte range.
  const std::string at_cap =
      raw_file("cap.safetensors",
               R"({"w":{"dtype":"I8","shape":[281474976710656],"data_offsets":[0,0]}})", "");
  EXPECT_NE(open_error(at_cap).find("needs 281474976710656"), std::string::npos)
      << open_error(at_cap);
}

TEST(Safetensors, TruncatedFileIsDetected) {
  Tensor a = Tensor::from_f32({1.f, 2.f, 3.f, 4.f}, {4});
  const std::string p = temp_path("trunc.safetensors");
  io::write_safetensors(p, {{"a", a}});
  std::filesystem::resize_file(p, std::filesystem::file_size(p) - 4);
  const std::string e = open_error(p);
  EXPECT_NE(e.find("tensor 'a'"), std::string::npos) << e;
  EXPECT_NE(e.find("run past the end"), std::string::npos) << e;
}
