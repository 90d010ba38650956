// The cpu kernels instantiated at the avx512 level. Built with the AVX-512
// flags (CMake, by file name); chosen only when cpuid reports AVX-512 F/BW/VL.
// GCC 12's AVX-512 intrinsic headers start several conversions from
// _mm512_undefined_*(), which -W(maybe-)uninitialized reports as a false error.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
// GCC fuses a*b+c into an FMA in C++ whenever -mfma is on, even in ISO mode
// and through intrinsics. The kernels say where they want an FMA (S::fma);
// every other product is rounded, so the same source gives the same bits at
// every level and cancellations such as g - mean(g) for one column are exact.
#pragma GCC optimize("fp-contract=off")
#define KEEL_CPU_ISA avx512
#include <cstring>
#include <vector>

#include "backend/cpu/cpu_kernels_impl.h"

namespace keel::backend::cpu {

const KernelTable& kernels_avx512() {
  static const KernelTable t = avx512::make_table<avx512::Avx512>();
  return t;
}

namespace {

// Runs `trials` random blocks of R x 4 vectors of the attention products
// through Block(asm = true) and Block(asm = false) and counts the results
// whose bits differ. Word makes one element of A or B from the generator's
// values in [-2, 2); K counts Word elements along k.
template <int R, class Word, class Block>
int tile_block_mismatches(int trials, Word word, Block block) {
  uint64_t x = 0x9E3779B97F4A7C15ull;
  auto next = [&x] {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    return uint32_t(x >> 33);
  };
  auto value = [&] { return float(int32_t(next() % 4096) - 2048) / 1024.f; };
  using W = decltype(word(value));
  int bad = 0;
  for (int t = 0; t < trials; ++t) {
    const int64_t K = 1 + int64_t(next() % 80), ldb = 64 + 16 * int64_t(next() % 3);
    const int64_t ldc = 64 + 16 * int64_t(next() % 3);
    // Rows along k (the scores' K) or k-major (P V's and dQ's P and dS).
    const bool rows = next() % 2;
    const int64_t a_row = rows ? K : 1, a_col = rows ? 1 : R + int64_t(next() % 3);
    const int64_t k0 = next() % 3 == 0 ? int64_t(next() % K) : 0;
    const int64_t k1 = next() % 3 == 0 ? k0 + int64_t(next() % (K - k0 + 1)) : K;
    const bool accumulate = next() % 2, scaled = next() % 2;
    std::vector<W> A(size_t(R * K * (rows ? 1 : a_col))), B(size_t(K * ldb));
    std::vector<float> C(size_t(R * ldc)), scale(R);
    for (auto& w : A) w = word(value);
    for (auto& w : B) w = word(value);
    for (auto& c : C) c = value();
    for (auto& s : scale) s = value();
    std::vector<float> asm_c = C, intr_c = C;
    const float* rs = scaled ? scale.data() : nullptr;
    block(std::true_type{}, k0, k1, A.data(), a_row, a_col, B.data(), ldb, asm_c.data(), ldc,
          accumulate, rs);
    block(std::false_type{}, k0, k1, A.data(), a_row, a_col, B.data(), ldb, intr_c.data(), ldc,
          accumulate, rs);
    bad += std::memcmp(asm_c.data(), intr_c.data(), C.size() * sizeof(float)) != 0;
  }
  return bad;
}

}  // namespace

int bf16_tile_block_mismatches(int trials) {
  // Pair words of two bf16 values.
  auto word = [](auto& value) {
    const uint32_t lo = f32_to_bf16(value()), hi = f32_to_bf16(value());
    return lo | (hi << 16);
  };
  return tile_block_mismatches<4>(trials, word, [](auto asm_on, auto... args) {
    avx512::tile_dot_block<4, 4, decltype(asm_on)::value>(args...);
  });
}

int f32_tile_block_mismatches(int trials) {
  auto word = [](auto& value) { return value(); };
  return tile_block_mismatches<6>(trials, word, [](auto asm_on, auto... args) {
    avx512::tile_gemm_block<avx512::Avx512, 6, 4, decltype(asm_on)::value>(args...);
  });
}

}  // namespace keel::backend::cpu
