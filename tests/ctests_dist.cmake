# Distributed tests as real ranks: mpirun starts the drivers in tests/dist
# (gtest programs with their own main; not globbed as single-process tests).
# Ranks are single-threaded (OMP_NUM_THREADS=1, the tests' backends use one thread).
foreach(_d mpi_collectives mpi_data_parallel)
  add_executable(${_d} ${CMAKE_SOURCE_DIR}/tests/dist/${_d}.cpp)
  target_link_libraries(${_d} PRIVATE keel_dist GTest::gtest)
endforeach()

# As root OpenMPI needs --allow-run-as-root; shared memory between ranks on one
# machine (vader) with loopback TCP excluded; no core binding, since the
# machine is shared and ranks may outnumber cores.
set(KEEL_MPIRUN ${MPIEXEC_EXECUTABLE} --allow-run-as-root --oversubscribe --bind-to none
    --mca btl self,vader -x OMP_NUM_THREADS=1)

add_test(NAME dist_collectives_2_ranks COMMAND ${KEEL_MPIRUN} -n 2 $<TARGET_FILE:mpi_collectives>)
add_test(NAME dist_collectives_3_ranks COMMAND ${KEEL_MPIRUN} -n 3 $<TARGET_FILE:mpi_collectives>)
add_test(NAME dist_data_parallel_2_ranks COMMAND ${KEEL_MPIRUN} -n 2 $<TARGET_FILE:mpi_data_parallel>)
add_test(NAME dist_data_parallel_3_ranks COMMAND ${KEEL_MPIRUN} -n 3 $<TARGET_FILE:mpi_data_parallel>)
# Two separate runs print the same final parameter hash.
add_test(NAME dist_data_parallel_repeatable
         COMMAND sh -c "a=$(\"$@\" 2>&1 | grep 'final parameter hash') && \
b=$(\"$@\" 2>&1 | grep 'final parameter hash') && echo \"$a\" && echo \"$b\" && [ -n \"$a\" ] && [ \"$a\" = \"$b\" ]"
                 sh ${KEEL_MPIRUN} -n 2 $<TARGET_FILE:mpi_data_parallel> --gtest_filter=*RunsRepeat*)
set_tests_properties(dist_collectives_2_ranks dist_collectives_3_ranks dist_data_parallel_2_ranks dist_data_parallel_3_ranks
                     dist_data_parallel_repeatable PROPERTIES TIMEOUT 120 LABELS dist)

# `keel train` as a 2-rank world: ZeRO-1 and the plain update write the same
# model bytes, and a ZeRO-1 run resumed from its step-10 checkpoint (moments
# gathered for the save, re-split after the load) ends with the same bytes too.
set(_dc ${CMAKE_CURRENT_BINARY_DIR}/dist_cli)
set(_sotu ${CMAKE_SOURCE_DIR}/third_party/sotu/data)
if(EXISTS ${_sotu}/1790_george_washington_n.txt)
  file(MAKE_DIRECTORY ${_dc}/corpus)
  foreach(f 1790_george_washington_n.txt 1791_george_washington_n.txt)
    file(COPY ${_sotu}/${f} DESTINATION ${_dc}/corpus)
  endforeach()
  set(_args data.corpus=${_dc}/corpus data.vocab_size=384 data.val_fraction=0.25
      data.cache_dir=${_dc}/cache model.n_layer=1 model.n_head=2 model.n_embd=64
      model.max_seq_len=32 train.seq_len=32 train.batch_size=8 train.steps=20
      train.warmup_steps=5 train.lr=3e-3 train.eval_every=10 train.eval_batches=2
      train.threads=1 train.peak_gflops=10 checkpoint.every=10 checkpoint.async=false)
  add_test(NAME dist_train_cli_zero1_and_resume
           COMMAND sh -c "set -e; d=$0; rm -rf $d/z $d/p $d/r; \
\"$@\" run.dir=$d/z dist.zero1=true > $d/z.log 2>&1; \
\"$@\" run.dir=$d/p dist.zero1=false > $d/p.log 2>&1; \
cmp $d/z/model.safetensors $d/p/model.safetensors; \
mkdir -p $d/r/checkpoints; cp -r $d/z/checkpoints/step-00000010 $d/r/checkpoints/; \
\"$@\" run.dir=$d/r dist.zero1=true > $d/r.log 2>&1; \
grep -q 'resumed from .*step-00000010' $d/r.log; \
cmp $d/z/model.safetensors $d/r/model.safetensors; echo 'zero1 == plain, resumed == uninterrupted'"
                   ${_dc} ${KEEL_MPIRUN} -n 2 $<TARGET_FILE:keel> train ${_args})
  set_tests_properties(dist_train_cli_zero1_and_resume PROPERTIES TIMEOUT 180 LABELS dist)
else()
  keel_missing_dependency(dist_missing_dependency "${KEEL_SOTU_MISSING}")
endif()
