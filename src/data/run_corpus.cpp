#include "data/run_corpus.h"

#include <filesystem>

#include "core/error.h"

namespace keel::data {

PrepareResult prepare_run_corpus(const io::Config& cfg) {
  const auto& d = cfg.data;
  if (!std::filesystem::exists(d.corpus))
    fail<IoError>("data.corpus: {}: no such file or directory", d.corpus);
  PrepareOptions opt;
  opt.inputs = {d.corpus};
  if (d.tokenizer == "gpt2") {
    opt.tokenizer = TokenizerSource::Gpt2;
    opt.gpt2_dir = d.gpt2_dir;
  } else {
    opt.tokenizer = TokenizerSource::Train;
    opt.vocab_size = int32_t(d.vocab_size);
  }
  opt.val_fraction = d.val_fraction;
  opt.seed = d.split_seed;
  return prepare_corpus_cached(opt, d.cache_dir);
}

}  // namespace keel::data
