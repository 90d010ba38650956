# `keel verify kernels`: cpu against ref at every vector level this machine
# can run (KEEL_CPU_LEVEL caps it), and the error path for a bad backend name.
add_test(NAME verify_kernels_ref_cpu
         COMMAND $<TARGET_FILE:keel> verify kernels --backends ref,cpu)
add_test(NAME verify_kernels_ref_cpu_scalar
         COMMAND ${CMAKE_COMMAND} -E env KEEL_CPU_LEVEL=scalar
                 $<TARGET_FILE:keel> verify kernels --backends ref,cpu)
add_test(NAME verify_kernels_ref_cpu_avx2
         COMMAND ${CMAKE_COMMAND} -E env KEEL_CPU_LEVEL=avx2
                 $<TARGET_FILE:keel> verify kernels --backends ref,cpu)
# Each GEMM engine the cpu backend can be forced to (KEEL_GEMM), matmul only.
foreach(engine openblas portable)
  add_test(NAME verify_kernels_matmul_${engine}
           COMMAND ${CMAKE_COMMAND} -E env KEEL_GEMM=${engine}
                   $<TARGET_FILE:keel> verify kernels --backends ref,cpu --kernel matmul)
endforeach()
# A different seed gives different inputs and must pass too.
add_test(NAME verify_kernels_seed
         COMMAND $<TARGET_FILE:keel> verify kernels --backends ref,cpu --seed 12345)
set_tests_properties(verify_kernels_ref_cpu verify_kernels_ref_cpu_scalar
                     verify_kernels_ref_cpu_avx2 verify_kernels_matmul_openblas
                     verify_kernels_matmul_portable verify_kernels_seed
                     PROPERTIES TIMEOUT 120 LABELS verify)

# Bad arguments: exit code exactly 1 (a keel::Error, not a crash) and a
# message naming the bad value.
function(keel_verify_rejects name expect)
  add_test(NAME ${name}
           COMMAND sh -c "out=$(\"$0\" \"$@\" 2>&1); rc=$?; echo \"$out\"; [ $rc -eq 1 ] && echo \"$out\" | grep -qF \"${expect}\""
                   $<TARGET_FILE:keel> ${ARGN})
  set_tests_properties(${name} PROPERTIES TIMEOUT 30 LABELS verify)
endfunction()
keel_verify_rejects(verify_kernels_bad_backend "unknown backend 'nosuch'"
                    verify kernels --backends ref,nosuch)
keel_verify_rejects(verify_kernels_bad_kernel "unknown kernel 'gemm'"
                    verify kernels --backends ref,cpu --kernel gemm)
