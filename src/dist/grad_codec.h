// Gradient codecs for slow links: a replica's gradient (plus its error-feedback
// residual) becomes a compact byte payload; every replica decodes all payloads
// and sums them in rank order, so replicas stay bit-identical. What a codec
// drops is kept in the residual and added to the next step's gradient.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace keel::dist {

enum class GradCodecKind : uint8_t { None, Bf16, Int8, TopK, Int4 };

struct GradCodecConfig {
  GradCodecKind kind = GradCodecKind::None;
  int64_t int8_block = 256;     // elements sharing one f32 scale (Int8, Int4)
  double topk_fraction = 0.01;  // share of elements sent (TopK), in (0, 1]
  // Sparsity warm-up (TopK): the share sent at step s < topk_warmup_steps decays
  // exponentially from topk_warmup_start to topk_fraction (Deep Gradient
  // Compression's dense start); 0: topk_fraction from the first step.
  int64_t topk_warmup_steps = 0;
  double topk_warmup_start = 0.25;
  // TopK: the selected values as int8 with one f32 scale per int8_block of
  // them (what rounding drops stays in the residual) instead of f32: about
  // half the bytes per sent element.
  bool topk_int8 = false;
};

// The top-k share for 0-based step `step` under cfg's warm-up (cfg.topk_fraction
// once the warm-up is over, or without one). A pure function of the step, so a
// resumed run sends what the uninterrupted one did.
double topk_fraction_at(const GradCodecConfig& cfg, int64_t step);

// "none" | "bf16" | "int8" | "int4" | "topk"; throws ConfigError naming `key` otherwise.
GradCodecKind parse_grad_codec(const std::string& name, const std::string& key);
const char* grad_codec_name(GradCodecKind k);

// Bytes of the payload for n elements (fixed for a given n: payloads of all
// ranks have the same size, so they can be all-gathered).
size_t encoded_bytes(const GradCodecConfig& cfg, int64_t n);

// Encodes x + residual into out (encoded_bytes(cfg, n) bytes) and sets
// residual := (x + residual) - decode(out). With kind None the payload is the
// raw f32 values and the residual stays zero.
void encode_with_feedback(const GradCodecConfig& cfg, std::span<const float> x,
                          std::span<float> residual, std::span<uint8_t> out);

// Adds the decoded payload to acc (acc.size() elements).
void decode_accumulate(const GradCodecConfig& cfg, std::span<const uint8_t> payload,
                       std::span<float> acc);

}  // namespace keel::dist
