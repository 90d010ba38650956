// The corpus a run's config names ([data]), tokenized into token shards in
// data.cache_dir and reused while the inputs and settings are unchanged.
// Training reads the shards; `keel verify model` reads the held-out split.
#pragma once
#include "data/corpus.h"
#include "io/config.h"

namespace keel::data {

// Tokenizes data.corpus into data.cache_dir (reused when unchanged). A missing
// corpus is an IoError naming it.
PrepareResult prepare_run_corpus(const io::Config& cfg);

}  // namespace keel::data
