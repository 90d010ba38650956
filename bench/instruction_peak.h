// The CPU's FLOP peak per dtype from instruction throughput alone: loops of
// vfmadd231ps (f32), vdpbf16ps (bf16) or the int8 dot of the quantized
// kernels (vpdpbusd with AVX-512 VNNI, else vpmaddubsw; 2 ops a byte product)
// on registers, on every thread at once. A GEMM's rate
// against this is its efficiency on the hardware; the bf16 / f32 ratio of these peaks is what the
// instructions allow a bf16 step over an f32 one. In assembly so that no
// compiler flag is needed; chosen by cpuid.
#pragma once
#include <algorithm>
#include <chrono>
#include <thread>
#include <vector>

#include "core/cpu_features.h"

namespace keel::bench {

namespace instruction_peak_detail {

// 24 independent accumulators on AVX-512 (registers 2-25; the functions
// carry the target so that those may be named), 14 twice over on AVX2
// (registers 2-15, chains of two still shorter than the cycles the two ports
// take).
// clang-format off
#define KEEL_IP_24(op) op(2) op(3) op(4) op(5) op(6) op(7) op(8) op(9) op(10) op(11) op(12) op(13) \
  op(14) op(15) op(16) op(17) op(18) op(19) op(20) op(21) op(22) op(23) op(24) op(25)
#define KEEL_IP_28(op) op(2) op(3) op(4) op(5) op(6) op(7) op(8) op(9) op(10) op(11) op(12) op(13) \
  op(14) op(15) op(2) op(3) op(4) op(5) op(6) op(7) op(8) op(9) op(10) op(11) op(12) op(13) \
  op(14) op(15)
#define KEEL_IP_FMA_ZMM(n) "vfmadd231ps %%zmm0, %%zmm1, %%zmm" #n "\n\t"
#define KEEL_IP_DP_ZMM(n) "vdpbf16ps %%zmm0, %%zmm1, %%zmm" #n "\n\t"
#define KEEL_IP_FMA_YMM(n) "vfmadd231ps %%ymm0, %%ymm1, %%ymm" #n "\n\t"
#define KEEL_IP_VNNI_ZMM(n) "vpdpbusd %%zmm0, %%zmm1, %%zmm" #n "\n\t"
#define KEEL_IP_MADDUBS_YMM(n) "vpmaddubsw %%ymm0, %%ymm1, %%ymm" #n "\n\t"
#define KEEL_IP_LOOP(body) \
  "vxorps %%xmm0, %%xmm0, %%xmm0\n\tvxorps %%xmm1, %%xmm1, %%xmm1\n\t1:\n\t" body \
  "dec %0\n\tjnz 1b"
#define KEEL_IP_CLOBBER16 "cc", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", \
  "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15"
#define KEEL_IP_CLOBBER32 KEEL_IP_CLOBBER16, "xmm16", "xmm17", "xmm18", "xmm19", "xmm20", "xmm21", \
  "xmm22", "xmm23", "xmm24", "xmm25"
// clang-format on

__attribute__((target("avx512f"))) inline void loop_f32_zmm(long n) {
  asm volatile(KEEL_IP_LOOP(KEEL_IP_24(KEEL_IP_FMA_ZMM)) : "+r"(n) : : KEEL_IP_CLOBBER32);
}
__attribute__((target("avx512f"))) inline void loop_bf16_zmm(long n) {
  asm volatile(KEEL_IP_LOOP(KEEL_IP_24(KEEL_IP_DP_ZMM)) : "+r"(n) : : KEEL_IP_CLOBBER32);
}
inline void loop_f32_ymm(long n) {
  asm volatile(KEEL_IP_LOOP(KEEL_IP_28(KEEL_IP_FMA_YMM)) : "+r"(n) : : KEEL_IP_CLOBBER16);
}
__attribute__((target("avx512f,avx512vnni"))) inline void loop_i8_zmm(long n) {
  asm volatile(KEEL_IP_LOOP(KEEL_IP_24(KEEL_IP_VNNI_ZMM)) : "+r"(n) : : KEEL_IP_CLOBBER32);
}
// vpmaddubsw writes its result (no accumulator): 28 independent ones.
__attribute__((target("avx2"))) inline void loop_i8_ymm(long n) {
  asm volatile(KEEL_IP_LOOP(KEEL_IP_28(KEEL_IP_MADDUBS_YMM)) : "+r"(n) : : KEEL_IP_CLOBBER16);
}

#undef KEEL_IP_24
#undef KEEL_IP_28
#undef KEEL_IP_FMA_ZMM
#undef KEEL_IP_DP_ZMM
#undef KEEL_IP_FMA_YMM
#undef KEEL_IP_VNNI_ZMM
#undef KEEL_IP_MADDUBS_YMM
#undef KEEL_IP_LOOP
#undef KEEL_IP_CLOBBER16
#undef KEEL_IP_CLOBBER32

enum class Kind { F32Zmm, Bf16Zmm, F32Ymm, I8Zmm, I8Ymm };

// Operations (a multiply-add counts 2) per instruction of each kind.
inline double ops_per_instruction(Kind k) {
  switch (k) {
    case Kind::F32Zmm:
      return 32;
    case Kind::Bf16Zmm:
      return 64;
    case Kind::F32Ymm:
      return 16;
    case Kind::I8Zmm:
      return 128;  // 64 byte products, summed in fours
    case Kind::I8Ymm:
      return 64;  // 32 byte products, summed in pairs (the widening after it not counted)
  }
  return 0;
}

// Instructions per second over `iters` iterations.
inline double rate(Kind kind, long iters) {
  const auto t0 = std::chrono::steady_clock::now();
  if (kind == Kind::F32Zmm)
    loop_f32_zmm(iters);
  else if (kind == Kind::Bf16Zmm)
    loop_bf16_zmm(iters);
  else if (kind == Kind::I8Zmm)
    loop_i8_zmm(iters);
  else if (kind == Kind::I8Ymm)
    loop_i8_ymm(iters);
  else
    loop_f32_ymm(iters);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return double(iters) * (kind == Kind::F32Ymm || kind == Kind::I8Ymm ? 28 : 24) / s;
}

// FLOP/s of `threads` threads at once for each kind, each thread the best of
// `reps` runs of about 0.05 s per kind, the kinds in turns so that a slow
// spell of the host falls on both; summed over the threads.
inline std::vector<double> flops(const std::vector<Kind>& kinds, int threads, int reps = 6) {
  const size_t nt = size_t(std::max(threads, 1));
  std::vector<std::vector<double>> best(nt, std::vector<double>(kinds.size(), 0.0));
  std::vector<std::thread> team;
  for (size_t t = 0; t < nt; ++t)
    team.emplace_back([&, t] {
      for (int r = 0; r < reps; ++r)
        for (size_t k = 0; k < kinds.size(); ++k)
          best[t][k] = std::max(best[t][k], rate(kinds[k], 8'000'000));
    });
  for (auto& th : team) th.join();
  std::vector<double> out(kinds.size(), 0.0);
  for (size_t k = 0; k < kinds.size(); ++k) {
    for (size_t t = 0; t < nt; ++t) out[k] += best[t][k] * ops_per_instruction(kinds[k]);
  }
  return out;
}

}  // namespace instruction_peak_detail

struct InstructionPeak {
  double f32_flops = 0;   // 0 without AVX2 + FMA
  double bf16_flops = 0;  // 0 without AVX512-BF16
  double i8_ops = 0;      // int8 dot products (i8_peak only); 0 without AVX2
};

// The instruction peaks on `threads` threads (about a second).
inline InstructionPeak instruction_peak(int threads) {
  using namespace instruction_peak_detail;
  const CpuFeatures& f = cpu_features();
  InstructionPeak p;
  if (f.avx512f && f.avx512_bf16) {
    const auto r = flops({Kind::F32Zmm, Kind::Bf16Zmm}, threads);
    p.f32_flops = r[0], p.bf16_flops = r[1];
  } else if (f.avx512f) {
    p.f32_flops = flops({Kind::F32Zmm}, threads)[0];
  } else if (f.avx2 && f.fma) {
    p.f32_flops = flops({Kind::F32Ymm}, threads)[0];
  }
  return p;
}

// The f32 peak and the int8 dot peak of the quantized kernels on `threads`
// threads (about a second).
inline InstructionPeak i8_peak(int threads) {
  using namespace instruction_peak_detail;
  const CpuFeatures& f = cpu_features();
  InstructionPeak p;
  if (!f.avx2 || !f.fma) return p;
  // Without VNNI the kernels take AVX2's maddubs, also on AVX-512 CPUs.
  const auto r = flops({f.avx512f ? Kind::F32Zmm : Kind::F32Ymm,
                        f.avx512f && f.avx512_vnni ? Kind::I8Zmm : Kind::I8Ymm},
                       threads);
  p.f32_flops = r[0], p.i8_ops = r[1];
  return p;
}

}  // namespace keel::bench
