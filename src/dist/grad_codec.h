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

enum class GradCodecKind : uint8_t { None, Bf16, Int8, TopK };

struct GradCodecConfig {
  GradCodecKind kind = GradCodecKind::None;
  int64_t int8_block = 256;     // elements sharing one f32 scale (Int8)
  double topk_fraction = 0.01;  // share of elements sent (TopK), in (0, 1]
};

// "none" | "bf16" | "int8" | "topk"; throws ConfigError naming `key` otherwise.
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
