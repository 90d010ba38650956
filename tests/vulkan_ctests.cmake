# Training on the vulkan backend (lavapipe in CI), against the cpu backend:
# loss parity, bit-identical reruns and pinned per-step transfers; kill -9 and
# resume bit-exact on the device; checkpoints that move between cpu and vulkan
# both ways; two MPI ranks on the device, plain and in every distributed mode
# (tests/scripts/vulkan_train_check.py).
# Included from the Vulkan section of CMakeLists.txt, so only when it is built.
# Timeouts are for hangs only: lavapipe on a 2-core Zen 3 took 190 s (parity)
# and 126 s (kill -9) alone and over 300 s beside the rest of the suite.
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
    set_tests_properties(vulkan_train_${mode} PROPERTIES TIMEOUT 600 LABELS "vulkan;train")
  endforeach()
  # ZeRO-1, every gradient codec and DiLoCo on the device (host-staged
  # collectives and host-side math), each against its 2-rank cpu run.
  add_test(NAME vulkan_train_dist_modes
           COMMAND /usr/bin/python3 ${CMAKE_SOURCE_DIR}/tests/scripts/vulkan_train_check.py
                   --keel $<TARGET_FILE:keel> --corpus ${_vk}/corpus --mode dist_modes
                   --workdir ${_vk}/dist_modes "--mpirun=${_vk_mpirun}")
  set_tests_properties(vulkan_train_dist_modes PROPERTIES TIMEOUT 600 LABELS "vulkan;train;dist")
  # The kill -9 test of the cpu backend, unchanged, on the device.
  add_test(NAME vulkan_checkpoint_kill9_random
           COMMAND python3 ${CMAKE_SOURCE_DIR}/tests/scripts/checkpoint_kill9_resume.py
                   --keel $<TARGET_FILE:keel> --corpus ${_vk}/corpus --compute f32 --mode random
                   --workdir ${_vk}/kill9 --set train.backend=vulkan
                   --set model.max_seq_len=32 --set train.seq_len=32)
  set_tests_properties(vulkan_checkpoint_kill9_random PROPERTIES TIMEOUT 600 LABELS "vulkan;resilience")
endif()

# Serving on the device: generate == serve over a socket, greedy text equal to
# the cpu backend's, and the parity certificate between two devices. Models
# from the serve_model (gpt2), engine_run (llama, GQA) and deepseek_run (MLA,
# MoE) fixtures.
find_program(KEEL_VK_NODE node)
if(KEEL_VK_NODE AND EXISTS ${_vk_sotu}/1790_george_washington_n.txt)
  add_test(NAME vulkan_serve_generate
           COMMAND ${KEEL_VK_NODE} ${CMAKE_SOURCE_DIR}/tests/node/vulkan_serve.mjs
                   $<TARGET_FILE:keel> ${CMAKE_CURRENT_BINARY_DIR}/engine_cli/run 32 none,q8_0 1)
  set_tests_properties(vulkan_serve_generate PROPERTIES TIMEOUT 300 LABELS "vulkan;serve"
                       FIXTURES_REQUIRED engine_run)
  # deepseek (latent KV cache, routed experts) from the deepseek_run fixture:
  # 12 tokens, as its context is 32 positions and the prompt takes some. Two
  # host waits per decode step: the route choice of its one MoE layer (the
  # expert matmuls' row counts are host arguments) and the logits.
  add_test(NAME vulkan_serve_deepseek
           COMMAND ${KEEL_VK_NODE} ${CMAKE_SOURCE_DIR}/tests/node/vulkan_serve.mjs
                   $<TARGET_FILE:keel> ${CMAKE_CURRENT_BINARY_DIR}/deepseek_cli/run 12 none,q8_0 2)
  set_tests_properties(vulkan_serve_deepseek PROPERTIES TIMEOUT 300 LABELS "vulkan;serve"
                       FIXTURES_REQUIRED deepseek_run)
endif()
if(EXISTS ${_vk_sotu}/1790_george_washington_n.txt)
  foreach(_m gpt2 llama deepseek)
    if(_m STREQUAL "gpt2")
      set(_run ${CMAKE_CURRENT_BINARY_DIR}/serve_cli/tiny)
      set(_fx serve_model)
    elseif(_m STREQUAL "deepseek")
      set(_run ${CMAKE_CURRENT_BINARY_DIR}/deepseek_cli/run)
      set(_fx deepseek_run)
    else()
      set(_run ${CMAKE_CURRENT_BINARY_DIR}/engine_cli/run)
      set(_fx engine_run)
    endif()
    # expect_run.sh checks the exit status too (--min-top1 1 and --max-logit-diff
    # fail the command when missed). 1e-3 is the parity bound for f32 between
    # two devices (measured 5e-7 / 2e-6 on lavapipe): sums in different orders.
    add_test(NAME vulkan_verify_model_${_m}
             COMMAND ${CMAKE_SOURCE_DIR}/tests/scripts/expect_run.sh 0
                     "top-1 agreement [0-9]+/[0-9]+ = 100.00%"
                     $<TARGET_FILE:keel> verify model --model ${_run} --backends cpu,vulkan
                     --max-tokens 16 --ppl-tokens 256 --min-top1 1 --max-logit-diff 1e-3)
    set_tests_properties(vulkan_verify_model_${_m} PROPERTIES TIMEOUT 300 LABELS "vulkan;engine"
                         FIXTURES_REQUIRED ${_fx})
  endforeach()
endif()

# Out of device memory is an error naming the tensor, its shape and the budget.
if(EXISTS ${_vk_sotu}/1790_george_washington_n.txt)
  add_test(NAME vulkan_train_out_of_memory
           COMMAND ${CMAKE_SOURCE_DIR}/tests/scripts/expect_run.sh 1
                   "cannot allocate [a-z_.0-9]+ f32\\[[0-9, ]+\\] \\([0-9]+ bytes\\): Vulkan: out of device memory .*pool budget 1048576 bytes"
                   $<TARGET_FILE:keel> train --no-resume data.corpus=${_vk}/corpus data.vocab_size=384
                   data.val_fraction=0.25 data.cache_dir=${_vk}/oom_cache model.n_layer=1 model.n_head=2
                   model.n_embd=64 model.max_seq_len=32 train.seq_len=32 train.batch_size=8 train.steps=5
                   train.backend=vulkan train.peak_gflops=10 run.dir=${_vk}/oom)
  set_tests_properties(vulkan_train_out_of_memory PROPERTIES TIMEOUT 120 LABELS "vulkan;train"
                       ENVIRONMENT KEEL_VULKAN_MEMORY_MB=1)
endif()

# DeepSeek (MLA, routed experts, the balancing bias and loss) trained on the
# device against the cpu backend, and kill -9 and resume bit-exact on it.
if(EXISTS ${_vk_sotu}/1790_george_washington_n.txt)
  add_test(NAME vulkan_train_deepseek
           COMMAND /usr/bin/python3 ${CMAKE_SOURCE_DIR}/tests/scripts/vulkan_deepseek_check.py
                   --keel $<TARGET_FILE:keel> --config ${CMAKE_SOURCE_DIR}/configs/deepseek-tiny.toml
                   --corpus ${_vk}/corpus --workdir ${_vk}/deepseek)
  set_tests_properties(vulkan_train_deepseek PROPERTIES TIMEOUT 600 LABELS "vulkan;train;deepseek")
endif()
