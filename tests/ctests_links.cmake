# Slow links (docs/distributed.md, "Slow links"): compressed gradient sums and
# DiLoCo as real ranks under mpirun, kill -9 resume in every mode, and the
# settings that must be refused.
add_executable(mpi_slow_links ${CMAKE_SOURCE_DIR}/tests/dist/mpi_slow_links.cpp)
target_link_libraries(mpi_slow_links PRIVATE keel_dist GTest::gtest)
set(_lk_mpirun ${MPIEXEC_EXECUTABLE} --allow-run-as-root --oversubscribe --bind-to none
    --mca btl self,vader -x OMP_NUM_THREADS=1)
add_test(NAME links_mpi_2_ranks COMMAND ${_lk_mpirun} -n 2 $<TARGET_FILE:mpi_slow_links>)
add_test(NAME links_mpi_3_ranks COMMAND ${_lk_mpirun} -n 3 $<TARGET_FILE:mpi_slow_links>)
set_tests_properties(links_mpi_2_ranks links_mpi_3_ranks PROPERTIES TIMEOUT 120 LABELS "dist;links")

set(_lk ${CMAKE_CURRENT_BINARY_DIR}/links_cli)
set(_lk_sotu ${CMAKE_SOURCE_DIR}/third_party/sotu/data)
if(EXISTS ${_lk_sotu}/1790_george_washington_n.txt)
  file(MAKE_DIRECTORY ${_lk}/corpus)
  foreach(f 1790_george_washington_n.txt 1791_george_washington_n.txt)
    file(COPY ${_lk_sotu}/${f} DESTINATION ${_lk}/corpus)
  endforeach()
  # One rank SIGKILLed at a random step, the world rerun: every tensor of the
  # last checkpoint (residuals and DiLoCo state included) and every loss equal
  # the uninterrupted run's. DiLoCo checkpoints wait for outer steps
  # (checkpoint.every = 6, H = 4: saved at 8, 12, 20, 24). topk_update: per-rank
  # AdamW moments and a sparsity warm-up spanning the first checkpoint;
  # diloco_warm: a checkpoint inside the int4 gradient warm-up (6), then rounds.
  foreach(_mode bf16 int8 topk topk_update diloco diloco_int8 diloco_warm)
    set(_expect)
    if(_mode STREQUAL "diloco")
      set(_ov dist.sync=diloco dist.diloco_steps=4)
    elseif(_mode STREQUAL "topk_update")
      set(_ov dist.compression=topk dist.compress_update=true dist.topk_warmup_steps=10
              dist.topk_values=int8 dist.update_beta1=0.7)
      set(_expect --expect-tensor dist.update.exp_avg.rank1 --expect-tensor
                  dist.update.exp_avg_sq.rank1 --expect-tensor dist.grad_residual.rank1)
    elseif(_mode STREQUAL "diloco_warm")
      set(_ov dist.sync=diloco dist.diloco_steps=4 dist.compression=int4
              dist.diloco_warmup_steps=7)
      set(_expect --expect-tensor dist.diloco.grad_residual.rank1 --expect-tensor
                  dist.diloco.residual.rank1)
    elseif(_mode STREQUAL "diloco_int8")
      set(_ov dist.sync=diloco dist.diloco_steps=4 dist.compression=int8)
    else()
      set(_ov dist.compression=${_mode})
    endif()
    string(REPLACE ";" " " _mpi "${_lk_mpirun} -n 2")
    add_test(NAME links_kill9_resume_${_mode}
             COMMAND python3 ${CMAKE_SOURCE_DIR}/tests/scripts/dist_kill9_resume.py
                     --keel $<TARGET_FILE:keel> --mpirun "${_mpi}" --corpus ${_lk}/corpus
                     --workdir ${_lk}/kill9_${_mode} ${_expect} ${_ov})
    set_tests_properties(links_kill9_resume_${_mode} PROPERTIES TIMEOUT 180 LABELS "dist;links")
  endforeach()

  # DiLoCo under the supervisor: rank 1 killed by the fault injector inside a
  # round; the world restarts from the last outer step and ends bit-identical
  # to the fault-free run.
  add_test(NAME links_diloco_supervisor_kill
           COMMAND python3 ${CMAKE_SOURCE_DIR}/tests/scripts/dist_kill9_resume.py --supervised
                   --keel $<TARGET_FILE:keel> --mpirun mpirun --corpus ${_lk}/corpus
                   --workdir ${_lk}/supervised dist.sync=diloco dist.diloco_steps=4)
  set_tests_properties(links_diloco_supervisor_kill PROPERTIES TIMEOUT 180 LABELS "dist;links"
                       ENVIRONMENT OMP_NUM_THREADS=1 RESOURCE_LOCK mpirun)

  # Impossible settings: each a config error naming the key, before any work.
  set(_lk_args data.corpus=${_lk}/corpus data.cache_dir=${_lk}/cache run.dir=${_lk}/bad
      train.steps=2)
  foreach(_case "dist.diloco_steps=0|dist.diloco_steps"
                "dist.topk_fraction=0|dist.topk_fraction: must be in \\(0, 1\\]"
                "dist.topk_fraction=1.5|dist.topk_fraction: must be in \\(0, 1\\]"
                "dist.compression=int8|dist.compression = \"int8\" needs a world of more than one rank"
                "dist.sync=diloco|dist.sync = \"diloco\" needs a world of more than one rank"
                "dist.compression=zip|dist.compression"
                "dist.outer_momentum=1|dist.outer_momentum"
                "dist.compress_update=true|dist.compress_update: needs a codec"
                "dist.topk_warmup_steps=-1|dist.topk_warmup_steps"
                "dist.diloco_warmup_steps=5|dist.diloco_warmup_steps: needs dist.sync"
                "dist.topk_values=int8|dist.topk_values: applies to dist.compression"
                "dist.topk_values=fp8|dist.topk_values"
                "dist.topk_warmup_start=0|dist.topk_warmup_start: must be in \\(0, 1\\]"
                "dist.sync=diloco dist.zero1=true|dist.zero1: must be false with dist.sync"
                "dist.compression=topk dist.compress_update=true dist.zero1=true|dist.zero1: must be false with dist.compress_update"
                "dist.compression=topk dist.compress_update=true dist.sync=diloco|dist.compress_update: must be false with dist.sync"
                "dist.update_beta1=0.7|dist.update_beta1: applies to dist.compress_update"
                "dist.compression=topk dist.compress_update=true dist.update_beta1=1|dist.update_beta1: must be in \\[0, 1\\)")
    string(REPLACE "|" ";" _parts "${_case}")
    list(GET _parts 0 _kv)
    list(GET _parts 1 _want)
    string(REGEX REPLACE "[^a-z0-9_]" "_" _n "${_kv}")
    string(REPLACE " " ";" _kv "${_kv}")  # several overrides: one argument each
    # A configuration error exits with status 1 (keel::Error) and names the key.
    add_test(NAME links_config_error_${_n}
             COMMAND ${CMAKE_SOURCE_DIR}/tests/scripts/expect_run.sh 1 "${_want}"
                     $<TARGET_FILE:keel> train ${_lk_args} ${_kv})
    set_tests_properties(links_config_error_${_n} PROPERTIES LABELS links TIMEOUT 60)
  endforeach()
else()
  keel_missing_dependency(links_missing_dependency "${KEEL_SOTU_MISSING}")
endif()
