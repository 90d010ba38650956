// Token shards (round trip, each corruption error), the batch samplers
// (determinism, targets = shifted inputs) and corpus preparation end to end.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <numeric>

#include "core/error.h"
#include "data/batch_sampler.h"
#include "data/corpus.h"
#include "data/file_util.h"
#include "data/token_shard.h"
#include "data/tokenizer.h"

namespace fs = std::filesystem;
using namespace keel::data;

namespace {

class DataDir : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("keel_data_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  fs::path dir_;
};

std::vector<int32_t> iota_tokens(size_t n, int32_t mod) {
  std::vector<int32_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = int32_t((i * 7919 + 13) % size_t(mod));
  return v;
}

// Rewrites byte `offset` of a file with `value`, or truncates it to `size`.
void poke(const std::string& p, size_t offset, char value) {
  std::string s = read_file(p);
  s[offset] = value;
  std::ofstream(p, std::ios::binary | std::ios::trunc).write(s.data(), std::streamsize(s.size()));
}

void expect_io_error(const std::string& p, const std::vector<std::string>& parts) {
  try {
    TokenShard::open(p);
    ADD_FAILURE() << "opened a corrupt shard";
  } catch (const keel::IoError& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find(p), std::string::npos) << m;
    for (const auto& part : parts)
      EXPECT_NE(m.find(part), std::string::npos) << "'" << part << "' in " << m;
  }
}

}  // namespace

TEST_F(DataDir, ShardRoundTripU16AndU32) {
  for (uint64_t vocab : {uint64_t(50257), uint64_t(65536), uint64_t(70000)}) {
    const auto toks = iota_tokens(10007, int32_t(vocab));
    const auto p = path("s.bin");
    write_token_shard(p, toks, vocab, 0xabcdefu);
    const auto s = TokenShard::open(p);
    EXPECT_EQ(s.width(), vocab <= 65536 ? 2 : 4);
    EXPECT_EQ(fs::file_size(p), kTokenShardHeaderBytes + toks.size() * size_t(s.width()));
    EXPECT_EQ(s.vocab_size(), vocab);
    EXPECT_EQ(s.tokenizer_hash(), 0xabcdefu);
    ASSERT_EQ(s.size(), int64_t(toks.size()));
    for (size_t i = 0; i < toks.size(); ++i) ASSERT_EQ(s[int64_t(i)], toks[i]);
    std::vector<int32_t> part(100);
    s.read(9907, 100, part.data());
    EXPECT_TRUE(std::equal(part.begin(), part.end(), toks.begin() + 9907));
    EXPECT_THROW(s.read(9908, 100, part.data()), keel::Error);
  }
  for (const auto& e : fs::directory_iterator(fs::path(path("s.bin")).parent_path()))
    EXPECT_EQ(e.path().filename().string().find("s.bin.tmp."), std::string::npos) << e.path();
}

TEST_F(DataDir, ShardRejectsOutOfRangeTokens) {
  std::vector<int32_t> toks = {1, 2, 300};
  EXPECT_THROW(write_token_shard(path("x.bin"), toks, 300), keel::Error);
  toks[2] = -1;
  EXPECT_THROW(write_token_shard(path("x.bin"), toks, 300), keel::Error);
  EXPECT_FALSE(fs::exists(path("x.bin")));
}

TEST_F(DataDir, ShardCorruptionErrorsNameFieldAndOffset) {
  const auto toks = iota_tokens(1000, 500);
  const auto p = path("c.bin");
  write_token_shard(p, toks, 500);
  poke(p, 0, 'X');
  expect_io_error(p, {"magic", "offset 0"});

  write_token_shard(p, toks, 500);
  poke(p, 8, 9);
  expect_io_error(p, {"version", "offset 8"});

  write_token_shard(p, toks, 500);
  poke(p, 12, 3);
  expect_io_error(p, {"element_width", "offset 12"});

  write_token_shard(p, toks, 500);
  fs::resize_file(p, fs::file_size(p) - 1);
  expect_io_error(p, {"token_count", "offset 24", "truncated"});

  write_token_shard(p, toks, 500);
  fs::resize_file(p, 10);
  expect_io_error(p, {"header"});

  write_token_shard(p, toks, 500);
  poke(p, kTokenShardHeaderBytes + 777, 0x55);
  expect_io_error(p, {"checksum", "offset 32"});
  EXPECT_NO_THROW(TokenShard::open(p, /*verify_checksum=*/false));

  expect_io_error(path("missing.bin"), {"cannot open"});
}

TEST_F(DataDir, BatchSamplerIsAFunctionOfSeedStepStream) {
  const auto toks = iota_tokens(5000, 1000);
  write_token_shard(path("t.bin"), toks, 1000);
  const auto shard = TokenShard::open(path("t.bin"));
  const BatchSampler a(shard, 4, 16, 42), b(TokenShard::open(path("t.bin")), 4, 16, 42);
  const BatchSampler other_seed(shard, 4, 16, 43);
  auto vec = [](const keel::Tensor& t) {
    return std::vector<int32_t>(t.data<int32_t>(), t.data<int32_t>() + t.numel());
  };
  for (uint64_t step : {0u, 1u, 1000u}) {
    const auto x = a.batch(step, 0), y = b.batch(step, 0);
    EXPECT_EQ(x.inputs.shape(), (keel::Shape{4, 16}));
    EXPECT_EQ(x.inputs.dtype(), keel::DType::I32);
    EXPECT_EQ(vec(x.inputs), vec(y.inputs));
    EXPECT_EQ(vec(x.targets), vec(y.targets));
    EXPECT_NE(vec(x.inputs), vec(a.batch(step, 1).inputs));           // another rank
    EXPECT_NE(vec(x.inputs), vec(a.batch(step + 1, 0).inputs));       // another step
    EXPECT_NE(vec(x.inputs), vec(other_seed.batch(step, 0).inputs));  // another seed
    // Each row is the shard window at its offset; targets are shifted by one.
    for (int64_t r = 0; r < 4; ++r) {
      const int64_t o = a.offset(step, 0, r);
      ASSERT_GE(o, 0);
      ASSERT_LE(o + 17, int64_t(toks.size()));
      for (int64_t t = 0; t < 16; ++t) {
        EXPECT_EQ(x.inputs.data<int32_t>()[r * 16 + t], toks[size_t(o + t)]);
        EXPECT_EQ(x.targets.data<int32_t>()[r * 16 + t], toks[size_t(o + t + 1)]);
      }
    }
  }
  // The offsets reach both ends of the valid range over many draws.
  int64_t lo = 1 << 30, hi = -1;
  for (uint64_t s = 0; s < 2000; ++s) {
    lo = std::min(lo, a.offset(s, 0, 0));
    hi = std::max(hi, a.offset(s, 0, 0));
  }
  EXPECT_LT(lo, 20);
  EXPECT_GT(hi, 5000 - 17 - 20);
  auto bad = keel::Tensor::zeros({4, 15}, keel::DType::I32),
       ok = keel::Tensor::zeros({4, 16}, keel::DType::I32);
  EXPECT_THROW(a.fill(0, 0, bad, ok), keel::Error);
  EXPECT_THROW(BatchSampler(shard, 1, 5000, 0), keel::Error);
}

TEST_F(DataDir, EvalSamplerUsesFixedWindows) {
  const auto toks = iota_tokens(1000, 700);
  write_token_shard(path("v.bin"), toks, 700);
  const EvalSampler e(TokenShard::open(path("v.bin")), 3, 10);
  EXPECT_EQ(e.num_batches(), (999 / 10) / 3);
  for (int64_t k : {int64_t(0), e.num_batches() - 1}) {
    const auto b = e.batch(k);
    for (int64_t r = 0; r < 3; ++r)
      for (int64_t t = 0; t < 10; ++t) {
        const size_t o = size_t((k * 3 + r) * 10 + t);
        EXPECT_EQ(b.inputs.data<int32_t>()[r * 10 + t], toks[o]);
        EXPECT_EQ(b.targets.data<int32_t>()[r * 10 + t], toks[o + 1]);
      }
  }
  EXPECT_EQ(EvalSampler(TokenShard::open(path("v.bin")), 3, 10, 2).num_batches(), 2);
  EXPECT_THROW(e.batch(e.num_batches()), keel::Error);
  EXPECT_THROW(EvalSampler(TokenShard::open(path("v.bin")), 200, 10), keel::Error);
}

TEST(Corpus, SplitIsDeterministicWithExactCount) {
  const auto a = split_documents(233, 0.05, 1), b = split_documents(233, 0.05, 1);
  const auto c = split_documents(233, 0.05, 2);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  EXPECT_EQ(std::count(a.begin(), a.end(), true), 12);
  const auto two = split_documents(2, 0.01, 0), none = split_documents(10, 0.0, 0);
  EXPECT_EQ(std::count(two.begin(), two.end(), true), 1);
  EXPECT_EQ(std::count(none.begin(), none.end(), true), 0);
  EXPECT_THROW(split_documents(10, 1.0, 0), keel::Error);
}

TEST(Corpus, UnigramEntropy) {
  const std::vector<int32_t> uniform4 = {0, 1, 2, 3, 3, 2, 1, 0};
  auto [bits, nats] = unigram_entropy(uniform4, 10);
  EXPECT_DOUBLE_EQ(bits, 2.0);
  EXPECT_NEAR(nats, 2.0 * std::log(2.0), 1e-12);
  const std::vector<int32_t> skew = {5, 5, 5, 7};  // p = 3/4, 1/4
  EXPECT_NEAR(unigram_entropy(skew, 10).first, -(0.75 * std::log2(0.75) + 0.25 * std::log2(0.25)),
              1e-12);
}

TEST_F(DataDir, PrepareWritesConsistentShards) {
  // Three files, one holding two documents separated by <|endoftext|>.
  fs::create_directories(dir_ / "in");
  std::ofstream(dir_ / "in" / "a.txt")
      << "The first document. It talks about the union and the states.";
  std::ofstream(dir_ / "in" / "b.txt")
      << "Second document here.<|endoftext|>Third one, caf\xc3\xa9 \xf0\x9f\x98\x80!";
  std::ofstream(dir_ / "in" / "c.txt") << "Fourth: the state of the union is strong. 1234 5678.";
  std::ofstream(dir_ / "in" / "skip.md") << "not a txt file";
  const auto docs = read_documents({path("in")});
  ASSERT_EQ(docs.size(), 4u);
  EXPECT_EQ(docs[1], "Second document here.");

  PrepareOptions o;
  o.inputs = {path("in")};
  o.out_dir = path("out");
  o.vocab_size = 300;
  o.val_fraction = 0.25;
  o.seed = 5;
  const auto r = prepare_corpus(o);
  EXPECT_EQ(r.train_docs, 3);
  EXPECT_EQ(r.val_docs, 1);
  const auto tok = Tokenizer::load(r.tokenizer_path);
  EXPECT_EQ(tok.id(), r.tokenizer_id);
  EXPECT_EQ(tok.vocab_size(), 300);
  const auto is_val = split_documents(docs.size(), 0.25, 5);
  std::string want_train, want_val;
  for (size_t i = 0; i < docs.size(); ++i)
    (is_val[i] ? want_val : want_train) += docs[i] + "<|endoftext|>";
  for (auto [shard_path, want, count] : {std::tuple{r.train_path, want_train, r.train_tokens},
                                         std::tuple{r.val_path, want_val, r.val_tokens}}) {
    const auto s = TokenShard::open(shard_path);
    EXPECT_EQ(s.size(), count);
    EXPECT_EQ(s.tokenizer_hash(), tok.hash());
    std::vector<int32_t> ids(size_t(s.size()));
    s.read(0, s.size(), ids.data());
    EXPECT_EQ(tok.decode(ids), want);
    EXPECT_EQ(ids.back(), tok.eot_id());
  }
  EXPECT_GT(r.unigram_entropy_bits, 1.0);
  EXPECT_NEAR(r.unigram_entropy_nats, r.unigram_entropy_bits * std::log(2.0), 1e-9);
  const auto back = load_prepare_result(path("out"));
  EXPECT_EQ(back.train_tokens, r.train_tokens);
  EXPECT_EQ(back.tokenizer_id, r.tokenizer_id);
  EXPECT_DOUBLE_EQ(back.unigram_entropy_bits, r.unigram_entropy_bits);

  // Cached preparation: second call reuses the directory without rewriting it.
  const auto c1 = prepare_corpus_cached(o, path("cache"));
  const auto mtime = fs::last_write_time(c1.train_path);
  const auto c2 = prepare_corpus_cached(o, path("cache"));
  EXPECT_EQ(c1.out_dir, c2.out_dir);
  EXPECT_EQ(fs::last_write_time(c2.train_path), mtime);
  EXPECT_EQ(c2.train_tokens, r.train_tokens);
  o.vocab_size = 301;
  EXPECT_NE(prepare_corpus_cached(o, path("cache")).out_dir, c1.out_dir);

  o.inputs = {path("in/nope.txt")};
  try {
    prepare_corpus(o);
    ADD_FAILURE() << "missing input accepted";
  } catch (const keel::IoError& e) {
    EXPECT_NE(std::string(e.what()).find("nope.txt"), std::string::npos) << e.what();
  }
}
