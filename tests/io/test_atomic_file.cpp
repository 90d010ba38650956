// Atomic file writes: the temp file is created exclusively and never through
// a symlink planted next to the target, and no temp file is left behind.
// Whole-file reads: every size byte for byte, /proc files, errors naming the path.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/file_bytes.h"

namespace fs = std::filesystem;
using namespace keel;

namespace {

fs::path fresh_dir(const std::string& name) {
  const fs::path d = fs::temp_directory_path() / ("keel_test_atomic_" + name);
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

}  // namespace

TEST(AtomicFile, PlantedSymlinkAtTheOldTempNameIsNotFollowed) {
  const fs::path d = fresh_dir("symlink");
  const fs::path victim = d / "victim.txt", target = d / "out.txt";
  io::write_file_atomic(victim.string(), "precious");
  // The temp name used to be <path>.tmp.<pid>: anyone able to write the
  // directory could plant a link there and have the writer follow it.
  fs::create_symlink(victim, d / ("out.txt.tmp." + std::to_string(::getpid())));
  io::write_file_atomic(target.string(), "new bytes");
  EXPECT_EQ(io::read_file_bytes(victim.string()), "precious");
  EXPECT_EQ(io::read_file_bytes(target.string()), "new bytes");
  EXPECT_FALSE(fs::is_symlink(target));
}

TEST(AtomicFile, NoTempFileIsLeftAndFailuresNameThePath) {
  const fs::path d = fresh_dir("left");
  io::write_file_atomic((d / "a.bin").string(), "x");
  io::write_file_atomic((d / "a.bin").string(), "yy");
  EXPECT_EQ(io::read_file_bytes((d / "a.bin").string()), "yy");
  int n = 0;
  for (const auto& e : fs::directory_iterator(d)) {
    ++n;
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << e.path();
  }
  EXPECT_EQ(n, 1);
  try {
    io::write_file_atomic((d / "missing_dir" / "b.bin").string(), "z");
    ADD_FAILURE() << "writing into a missing directory succeeded";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("b.bin"), std::string::npos) << e.what();
  }
}

TEST(ReadFile, WholeFilesOfEverySizeComeBackByteForByte) {
  const fs::path d = fresh_dir("read");
  // Around the heap / 2 MiB-page boundary of FileBytes, and empty.
  for (size_t n : {size_t(0), size_t(1), size_t(4097), (size_t(2) << 20) - 1, size_t(2) << 20,
                   (size_t(5) << 20) + 3}) {
    std::string want(n, '\0');
    for (size_t i = 0; i < n; ++i) want[i] = char((i * 131 + n) & 0xff);
    const fs::path p = d / std::to_string(n);
    io::write_file_atomic(p.string(), want);
    EXPECT_EQ(io::read_file_bytes(p.string()), want) << n;
    const io::FileBytes b = io::FileBytes::read(p.string());
    ASSERT_EQ(b.size(), n);
    EXPECT_TRUE(n == 0 || std::memcmp(b.data(), want.data(), n) == 0) << n;
  }
}

TEST(ReadFile, FilesWhoseSizeSaysNothingAreReadToTheEnd) {
  // /proc files report size 0; the content is still all there.
  const std::string s = io::read_file_bytes("/proc/self/status");
  EXPECT_NE(s.find("Name:"), std::string::npos);
  EXPECT_NE(s.find("VmRSS:"), std::string::npos);
}

TEST(ReadFile, FailuresNameThePath) {
  const fs::path d = fresh_dir("missing");
  const std::string p = (d / "absent.bin").string();
  for (int road = 0; road < 2; ++road) {
    try {
      if (road == 0)
        (void)io::read_file_bytes(p);
      else
        (void)io::FileBytes::read(p);
      FAIL() << "no error for a missing file";
    } catch (const IoError& e) {
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
    }
  }
  try {
    (void)io::FileBytes::read(d.string());
    FAIL() << "no error for a directory";
  } catch (const IoError& e) {
    EXPECT_NE(std::string(e.what()).find("not a regular file"), std::string::npos) << e.what();
  }
}
