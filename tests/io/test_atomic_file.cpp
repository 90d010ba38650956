// Atomic file writes: the temp file is created exclusively and never through
// a symlink planted next to the target, and no temp file is left behind.
#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>

#include "core/error.h"
#include "io/atomic_file.h"

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
