# Training on the vulkan backend (lavapipe in CI), against the cpu backend:
# loss parity, bit-identical reruns and pinned per-step transfers; kill -9 and
# resume bit-exact on the device; checkpoints that move between cpu and vulkan
# both ways; two MPI ranks on the device (tests/scripts/vulkan_train_check.py).
# Included from the Vulkan section of CMakeLists.txt, so only when it is built.
set(_vk_sotu ${CMAKE_SOURCE_DIR}/third_party/sotu/data)
set(_vk ${CMAKE_CURRENT_BINARY_DIR}/vulkan_train)
if(EXISTS ${_vk_sotu}/1790_george_washington_n.txt)
  file(MAKE_DIRECTORY ${_vk}/corpus)
  foreach(f 1790_george_washington_n.txt 1791_george_washington_n.txt 1792_george_washington_n.txt
            1793_george_washington_n.txt)
    file(COPY ${_vk_sotu}/${f} DESTINATION ${_vk}/corpus)
  endforeach()
  string(REPLACE ";" " " _vk_mpirun "${KEEL_MPIRUN}")
  foreach(mode parity cross dist)
    add_test(NAME vulkan_train_${mode}
             COMMAND /usr/bin/python3 ${CMAKE_SOURCE_DIR}/tests/scripts/vulkan_train_check.py
                     --keel $<TARGET_FILE:keel> --corpus ${_vk}/corpus --mode ${mode}
                     --workdir ${_vk}/${mode} "--mpirun=${_vk_mpirun}")
    set_tests_properties(vulkan_train_${mode} PROPERTIES TIMEOUT 300 LABELS "vulkan;train")
  endforeach()
  # The kill -9 test of the cpu backend, unchanged, on the device.
  add_test(NAME vulkan_checkpoint_kill9_random
           COMMAND python3 ${CMAKE_SOURCE_DIR}/tests/scripts/checkpoint_kill9_resume.py
                   --keel $<TARGET_FILE:keel> --corpus ${_vk}/corpus --compute f32 --mode random
                   --workdir ${_vk}/kill9 --set train.backend=vulkan)
  set_tests_properties(vulkan_checkpoint_kill9_random PROPERTIES TIMEOUT 300 LABELS "vulkan;resilience")
endif()
