# Checkpoints end to end through `keel train`: a real SIGKILL at a random
# moment after step 20 and in the middle of a checkpoint write, then resume;
# the parameters and optimizer state at step 40 must equal an uninterrupted
# run bit for bit (f32 and bf16 compute). And damaged checkpoints on disk:
# skipped with the file and the reason, older one used, or the run stops.
set(_ck_corpus ${CMAKE_CURRENT_BINARY_DIR}/checkpoint_cli/corpus)
set(_ck_sotu ${CMAKE_SOURCE_DIR}/third_party/sotu/data)
if(EXISTS ${_ck_sotu}/1790_george_washington_n.txt)
  file(MAKE_DIRECTORY ${_ck_corpus})
  foreach(f 1790_george_washington_n.txt 1791_george_washington_n.txt 1792_george_washington_n.txt
            1793_george_washington_n.txt)
    file(COPY ${_ck_sotu}/${f} DESTINATION ${_ck_corpus})
  endforeach()
  foreach(mode random during-write corrupt)
    foreach(compute f32 bf16)
      if(mode STREQUAL "corrupt" AND compute STREQUAL "bf16")
        continue()
      endif()
      set(_name checkpoint_kill9_${mode}_${compute})
      if(mode STREQUAL "corrupt")
        set(_name checkpoint_cli_corrupt_fallback)
      endif()
      add_test(NAME ${_name}
               COMMAND python3 ${CMAKE_SOURCE_DIR}/tests/scripts/checkpoint_kill9_resume.py
                       --keel $<TARGET_FILE:keel> --corpus ${_ck_corpus} --compute ${compute}
                       --mode ${mode} --workdir ${CMAKE_CURRENT_BINARY_DIR}/checkpoint_cli/${_name})
      set_tests_properties(${_name} PROPERTIES TIMEOUT 180 LABELS resilience)
    endforeach()
  endforeach()
else()
  keel_missing_dependency(checkpoint_missing_dependency "${KEEL_SOTU_MISSING}")
endif()
