# The GEMM and quantization tests again with the vector level capped at scalar,
# so the scalar conversion and integer-dot paths run on AVX2 machines too.
if(TARGET test_gemm AND TARGET test_quant)
  add_test(NAME gemm_scalar_level
           COMMAND test_gemm --gtest_filter=-Gemm.ThreadCountDoesNotChangeBits)
  add_test(NAME quant_scalar_level COMMAND test_quant)
  set_tests_properties(gemm_scalar_level quant_scalar_level PROPERTIES
                       ENVIRONMENT KEEL_CPU_LEVEL=scalar LABELS backend TIMEOUT 120)
  # And capped at AVX2: on AVX-512 machines the AVX2 packed kernels then run
  # and must give the bits of the 512-bit ones.
  add_test(NAME quant_avx2_level COMMAND test_quant)
  set_tests_properties(quant_avx2_level PROPERTIES
                       ENVIRONMENT KEEL_CPU_LEVEL=avx2 LABELS backend TIMEOUT 120)
endif()

# The OpenBLAS kernel choice under the environments seen on these machines: a
# weak core set by the environment is overridden (auto), or kept on request.
if(TARGET test_gemm)
  add_test(NAME gemm_core_env_haswell_auto
           COMMAND test_gemm --gtest_filter=Gemm.CoreChoiceFollowsKeelBlasCoretype:Gemm.F32*:Gemm.AgreesWithRefBackend)
  set_tests_properties(gemm_core_env_haswell_auto PROPERTIES
                       ENVIRONMENT "OPENBLAS_CORETYPE=Haswell;KEEL_BLAS_CORETYPE=auto" LABELS backend TIMEOUT 120)
  add_test(NAME gemm_core_env_prescott_auto
           COMMAND test_gemm --gtest_filter=Gemm.CoreChoiceFollowsKeelBlasCoretype)
  set_tests_properties(gemm_core_env_prescott_auto PROPERTIES
                       ENVIRONMENT "OPENBLAS_CORETYPE=Prescott" LABELS backend TIMEOUT 120)
  add_test(NAME gemm_core_env_kept
           COMMAND test_gemm --gtest_filter=Gemm.CoreChoiceFollowsKeelBlasCoretype)
  set_tests_properties(gemm_core_env_kept PROPERTIES
                       ENVIRONMENT "OPENBLAS_CORETYPE=Haswell;KEEL_BLAS_CORETYPE=env" LABELS backend TIMEOUT 120)
endif()
