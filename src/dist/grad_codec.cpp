#include "dist/grad_codec.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

#include "core/dtype.h"
#include "core/error.h"

namespace keel::dist {

namespace {

int64_t topk_count(const GradCodecConfig& cfg, int64_t n) {
  if (n == 0) return 0;
  return std::clamp<int64_t>(int64_t(std::ceil(cfg.topk_fraction * double(n))), 1, n);
}

int64_t int8_blocks(const GradCodecConfig& cfg, int64_t n) {
  return (n + cfg.int8_block - 1) / cfg.int8_block;
}

// Round half to even, as the hardware does, so encode is exactly reproducible.
int8_t quantize_int8(float v, float inv_scale, float qmax = 127.f) {
  const float q = std::nearbyint(v * inv_scale);
  return int8_t(std::clamp(q, -qmax, qmax));
}

// Int4: two values per byte, the even element in the low nibble, each in
// [-7, 7] as 4-bit two's complement.
float int4_at(const uint8_t* packed, int64_t i) {
  const uint8_t nib = uint8_t(packed[i / 2] >> (4 * (i % 2))) & 0xF;
  return float(int(nib) - (nib & 8 ? 16 : 0));
}

}  // namespace

GradCodecKind parse_grad_codec(const std::string& name, const std::string& key) {
  if (name == "none") return GradCodecKind::None;
  if (name == "bf16") return GradCodecKind::Bf16;
  if (name == "int8") return GradCodecKind::Int8;
  if (name == "int4") return GradCodecKind::Int4;
  if (name == "topk") return GradCodecKind::TopK;
  fail<ConfigError>(
      "{}: unknown gradient compression '{}' (expected none, bf16, int8, int4 or topk)", key, name);
}

double topk_fraction_at(const GradCodecConfig& cfg, int64_t step) {
  const double end = cfg.topk_fraction, start = cfg.topk_warmup_start;
  if (step >= cfg.topk_warmup_steps || end >= start) return end;
  const double t = double(step) / double(cfg.topk_warmup_steps);
  return std::max(end, start * std::pow(end / start, t));
}

const char* grad_codec_name(GradCodecKind k) {
  switch (k) {
    case GradCodecKind::None:
      return "none";
    case GradCodecKind::Bf16:
      return "bf16";
    case GradCodecKind::Int8:
      return "int8";
    case GradCodecKind::TopK:
      return "topk";
    case GradCodecKind::Int4:
      return "int4";
  }
  return "?";
}

size_t encoded_bytes(const GradCodecConfig& cfg, int64_t n) {
  switch (cfg.kind) {
    case GradCodecKind::None:
      return size_t(n) * 4;
    case GradCodecKind::Bf16:
      return size_t(n) * 2;
    case GradCodecKind::Int8:
      return size_t(n) + size_t(int8_blocks(cfg, n)) * 4;
    case GradCodecKind::Int4:
      return size_t((n + 1) / 2) + size_t(int8_blocks(cfg, n)) * 4;
    case GradCodecKind::TopK: {
      const int64_t k = topk_count(cfg, n);
      if (cfg.topk_int8)  // u32 index gaps, int8 values, f32 scale per block
        return size_t(k) * 5 + size_t((k + cfg.int8_block - 1) / cfg.int8_block) * 4;
      return size_t(k) * 8;  // u32 index gap + f32 value
    }
  }
  return 0;
}

void encode_with_feedback(const GradCodecConfig& cfg, std::span<const float> x,
                          std::span<float> residual, std::span<uint8_t> out) {
  const int64_t n = int64_t(x.size());
  KEEL_ASSERT(int64_t(residual.size()) == n && out.size() == encoded_bytes(cfg, n));
  switch (cfg.kind) {
    case GradCodecKind::None:
      std::memcpy(out.data(), x.data(), size_t(n) * 4);
      return;
    case GradCodecKind::Bf16:
      for (int64_t i = 0; i < n; ++i) {
        const float v = x[i] + residual[i];
        const uint16_t h = f32_to_bf16(v);
        std::memcpy(out.data() + 2 * i, &h, 2);
        residual[i] = v - bf16_to_f32(h);
      }
      return;
    case GradCodecKind::Int8:
    case GradCodecKind::Int4: {
      const bool four = cfg.kind == GradCodecKind::Int4;
      const float qmax = four ? 7.f : 127.f;
      const int64_t nb = int8_blocks(cfg, n);
      uint8_t* scales = out.data() + (four ? (n + 1) / 2 : n);
      if (four) std::fill_n(out.data(), (n + 1) / 2, uint8_t(0));
      for (int64_t b = 0; b < nb; ++b) {
        const int64_t lo = b * cfg.int8_block, hi = std::min(n, lo + cfg.int8_block);
        float amax = 0;
        for (int64_t i = lo; i < hi; ++i) amax = std::max(amax, std::fabs(x[i] + residual[i]));
        const float scale = amax / qmax;
        const float inv = scale > 0 ? 1.f / scale : 0.f;
        std::memcpy(scales + 4 * b, &scale, 4);
        for (int64_t i = lo; i < hi; ++i) {
          const float v = x[i] + residual[i];
          const int8_t q = quantize_int8(v, inv, qmax);
          if (four)
            out[size_t(i / 2)] |= uint8_t((uint8_t(q) & 0xF) << (4 * (i % 2)));
          else
            out[size_t(i)] = uint8_t(q);
          residual[i] = v - float(q) * scale;
        }
      }
      return;
    }
    case GradCodecKind::TopK: {
      const int64_t k = topk_count(cfg, n);
      std::vector<float> v(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) v[i] = x[i] + residual[i];
      std::vector<uint32_t> idx(static_cast<size_t>(n));
      std::iota(idx.begin(), idx.end(), 0u);
      // Largest magnitude first; equal magnitudes go to the smaller index.
      std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](uint32_t a, uint32_t b) {
        const float fa = std::fabs(v[a]), fb = std::fabs(v[b]);
        return fa > fb || (fa == fb && a < b);
      });
      std::sort(idx.begin(), idx.begin() + k);
      for (int64_t i = 0; i < n; ++i) residual[i] = v[i];
      // Index gaps, then values: small gaps leave most high bytes zero, which
      // the wire's entropy coder (compressed_sum.cpp) then removes.
      uint32_t prev = 0;
      for (int64_t j = 0; j < k; ++j) {
        const uint32_t i = idx[j], gap = i - prev;
        prev = i;
        std::memcpy(out.data() + 4 * j, &gap, 4);
        if (!cfg.topk_int8) {
          std::memcpy(out.data() + 4 * (k + j), &v[i], 4);
          residual[i] = 0;
        }
      }
      if (cfg.topk_int8) {
        uint8_t* q8 = out.data() + 4 * k;
        uint8_t* scales = q8 + k;
        for (int64_t lo = 0, b = 0; lo < k; lo += cfg.int8_block, ++b) {
          const int64_t hi = std::min(k, lo + cfg.int8_block);
          float amax = 0;
          for (int64_t j = lo; j < hi; ++j) amax = std::max(amax, std::fabs(v[idx[j]]));
          const float scale = amax / 127.f;
          const float inv = scale > 0 ? 1.f / scale : 0.f;
          std::memcpy(scales + 4 * b, &scale, 4);
          for (int64_t j = lo; j < hi; ++j) {
            const int8_t q = quantize_int8(v[idx[j]], inv);
            q8[j] = uint8_t(q);
            residual[idx[j]] = v[idx[j]] - float(q) * scale;
          }
        }
      }
      return;
    }
  }
}

void decode_accumulate(const GradCodecConfig& cfg, std::span<const uint8_t> payload,
                       std::span<float> acc) {
  const int64_t n = int64_t(acc.size());
  KEEL_ASSERT(payload.size() == encoded_bytes(cfg, n));
  switch (cfg.kind) {
    case GradCodecKind::None:
      for (int64_t i = 0; i < n; ++i) {
        float v;
        std::memcpy(&v, payload.data() + 4 * i, 4);
        acc[i] += v;
      }
      return;
    case GradCodecKind::Bf16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, payload.data() + 2 * i, 2);
        acc[i] += bf16_to_f32(h);
      }
      return;
    case GradCodecKind::Int8:
    case GradCodecKind::Int4: {
      const bool four = cfg.kind == GradCodecKind::Int4;
      const uint8_t* q = payload.data();
      const uint8_t* scales = q + (four ? (n + 1) / 2 : n);
      for (int64_t b = 0; b < int8_blocks(cfg, n); ++b) {
        float scale;
        std::memcpy(&scale, scales + 4 * b, 4);
        const int64_t lo = b * cfg.int8_block, hi = std::min(n, lo + cfg.int8_block);
        for (int64_t i = lo; i < hi; ++i)
          acc[i] += (four ? int4_at(q, i) : float(int8_t(q[size_t(i)]))) * scale;
      }
      return;
    }
    case GradCodecKind::TopK: {
      const int64_t k = topk_count(cfg, n);
      int64_t i = 0;
      const uint8_t* q8 = payload.data() + 4 * k;
      const uint8_t* scales = q8 + k;
      for (int64_t j = 0; j < k; ++j) {
        uint32_t gap;
        float v;
        std::memcpy(&gap, payload.data() + 4 * j, 4);
        if (cfg.topk_int8) {
          float scale;
          std::memcpy(&scale, scales + 4 * (j / cfg.int8_block), 4);
          v = float(int8_t(q8[j])) * scale;
        } else {
          std::memcpy(&v, payload.data() + 4 * (k + j), 4);
        }
        i += int64_t(gap);
        if (i >= n || (j > 0 && gap == 0))
          fail<DistError>("top-k payload: entry {} has index {} (out of range {} or repeated)", j,
                          i, n);
        acc[size_t(i)] += v;
      }
      return;
    }
  }
}

}  // namespace keel::dist
