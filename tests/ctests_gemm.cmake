# The GEMM and quantization tests again with the vector level capped at scalar,
# so the scalar conversion and integer-dot paths run on AVX2 machines too.
if(TARGET test_gemm AND TARGET test_quant)
  add_test(NAME gemm_scalar_level
           COMMAND test_gemm --gtest_filter=-Gemm.ThreadCountDoesNotChangeBits)
  add_test(NAME quant_scalar_level COMMAND test_quant)
  set_tests_properties(gemm_scalar_level quant_scalar_level PROPERTIES
                       ENVIRONMENT KEEL_CPU_LEVEL=scalar LABELS backend TIMEOUT 120)
endif()
