// main() for gtest programs that run as ranks under mpirun: one World for the
// whole program, output from rank 0 only (each rank still asserts, and
// mpirun's exit status is non-zero if any rank fails).
#pragma once
#include <gtest/gtest.h>

#include <cstdio>

#include "dist/mpi_world.h"

namespace keel::dist::testing {

inline World*& world_ptr() {
  static World* w = nullptr;
  return w;
}
inline World& world() {
  return *world_ptr();
}

inline int mpi_test_main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  World w;
  world_ptr() = &w;
  if (w.rank() != 0) {
    auto& ls = ::testing::UnitTest::GetInstance()->listeners();
    delete ls.Release(ls.default_result_printer());
  }
  const int rc = RUN_ALL_TESTS();
  if (rc != 0) std::fprintf(stderr, "rank %d of %d: tests FAILED\n", w.rank(), w.size());
  world_ptr() = nullptr;
  return rc;
}

}  // namespace keel::dist::testing
