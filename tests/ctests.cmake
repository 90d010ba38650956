# Non-gtest ctests (CLI runs, scripts). Each area keeps its own file.
foreach(f verify data train)
  if(EXISTS ${CMAKE_SOURCE_DIR}/tests/ctests_${f}.cmake)
    include(${CMAKE_SOURCE_DIR}/tests/ctests_${f}.cmake)
  endif()
endforeach()
