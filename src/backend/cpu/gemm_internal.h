// Internal to the cpu GEMM: the libraries it can call (loaded or linked), the
// per-block implementations the partitioning driver hands work to, and the
// bf16 <-> f32 conversions. Not part of the backend interface.
#pragma once
#include <cstdint>
#include <string>

#include "backend/backend.h"

namespace keel::backend::cpu::gemm_detail {

// Which library computes an f32 block.
enum class Engine : uint8_t { OpenBlas, OneDnn, Portable };
std::string_view engine_name(Engine e);
// The library for an f32 product (KEEL_GEMM, else by CPU and shape; gemm.cpp).
Engine choose_engine(const MatmulArgs& a);

// OpenBLAS loaded with dlopen; null members when no library could be loaded.
struct OpenBlas {
  using Sgemm = void (*)(int order, int ta, int tb, int M, int N, int K, float alpha,
                         const float* A, int lda, const float* B, int ldb, float beta, float* C,
                         int ldc);
  Sgemm sgemm = nullptr;  // null also when the kernels failed the start-up check
  std::string path, build, corename, config;
  std::string core_reason;      // why this core (KEEL_BLAS_CORETYPE, the environment, keel)
  double self_check_error = 0;  // start-up product against float64, relative to sum |a||b|
  std::string warning;          // non-empty when the kernels are weaker than the CPU or wrong
};
// Loads once (thread-safe), choosing OPENBLAS_CORETYPE first (KEEL_BLAS_CORETYPE:
// auto | env | a core name; gemm_blas.cpp) and checking the kernels after.
const OpenBlas& openblas();

// Whether oneDNN was linked into this build, and its version string.
bool onednn_available();
std::string onednn_version();
// Whether oneDNN has a bf16 matmul for this CPU (2.x: AVX-512 only).
bool onednn_bf16_supported();

// One block, single-threaded: batch == 1, already sliced by the driver.
void sgemm_openblas(const MatmulArgs& a, const float* A, const float* B, float* C);
void sgemm_onednn(const MatmulArgs& a, const float* A, const float* B, float* C);
void sgemm_portable(const MatmulArgs& a, const float* A, const float* B, float* C);
// bf16 A and B, f32 or bf16 C, through oneDNN's matmul primitive (one block).
void bf16gemm_onednn(const MatmulArgs& a, const void* A, const void* B, void* C);

// bf16 A and B, f32 or bf16 C, through keel's own AVX512-BF16 block
// (gemm_bf16_tile_avx512.cpp; one block). Only where the CPU has AVX512-BF16
// and bf16gemm_tile_applies (alpha 1; any beta, shape and stride).
bool bf16gemm_tile_applies(const MatmulArgs& a);
void bf16gemm_tile(const MatmulArgs& a, const void* A, const void* B, void* C);

// Vectorised conversions (AVX2 when the CPU has it), n elements.
void bf16_to_f32_n(const uint16_t* src, float* dst, int64_t n);
void f32_to_bf16_n(const float* src, uint16_t* dst, int64_t n);
// Scalar and AVX2 versions behind the dispatch above.
void bf16_to_f32_n_avx2(const uint16_t* src, float* dst, int64_t n);
void f32_to_bf16_n_avx2(const float* src, uint16_t* dst, int64_t n);

// Whether the run-time vector level (cpu_features capped by KEEL_CPU_LEVEL)
// allows AVX2 (+FMA) / AVX-512 (F, BW, VL, DQ and VNNI) code.
bool allow_avx2();
bool allow_avx512();

}  // namespace keel::backend::cpu::gemm_detail
