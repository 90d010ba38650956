# Non-gtest ctests (CLI runs, scripts). Each area keeps its own tests/ctests_<area>.cmake.
file(GLOB keel_ctest_files CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/tests/ctests_*.cmake)
foreach(f ${keel_ctest_files})
  include(${f})
endforeach()
