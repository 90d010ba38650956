// How a prefill or a decode step maps onto one batched forward: the rows of
// each sequence and which rows need logits. Shared by every inference model
// (gpt2/llama and DeepSeek), whose forward(segs, ids, M, logit_rows, logits)
// does the math.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "core/error.h"
#include "serve/kv_cache.h"

namespace keel::serve {

// One sequence's rows in a forward call: rows [row0, row0 + rows) of the
// batch are its positions [pos0, pos0 + rows).
struct ForwardSegment {
  KvSequence* seq;
  int64_t row0, rows, pos0;
};

// Prefill: ids are the next positions of seq; logits of the last row (or of
// every row when all_logits). Advances seq's length.
template <class Forward>
void prefill_through(KvSequence& seq, std::span<const int32_t> ids, bool all_logits,
                     const Forward& forward) {
  const int64_t T = int64_t(ids.size()), pos0 = seq.length();
  KEEL_ASSERT(T > 0 && pos0 + T <= seq.capacity());
  const ForwardSegment s{&seq, 0, T, pos0};
  std::vector<int64_t> rows;
  if (all_logits)
    for (int64_t t = 0; t < T; ++t) rows.push_back(t);
  else
    rows.push_back(T - 1);
  forward(std::span<const ForwardSegment>(&s, 1), ids.data(), T, std::span<const int64_t>(rows));
  seq.set_length(pos0 + T);
}

// One decode step: tokens[b] is the next token of seqs[b], one logits row
// each. Advances every sequence by one.
template <class Forward>
void decode_through(std::span<KvSequence* const> seqs, std::span<const int32_t> tokens,
                    const Forward& forward) {
  const int64_t B = int64_t(seqs.size());
  KEEL_ASSERT(int64_t(tokens.size()) == B);
  std::vector<ForwardSegment> segs;
  std::vector<int64_t> rows;
  for (int64_t b = 0; b < B; ++b) {
    KvSequence* s = seqs[size_t(b)];
    KEEL_ASSERT(s->length() < s->capacity());
    segs.push_back({s, b, 1, s->length()});
    rows.push_back(b);
  }
  forward(std::span<const ForwardSegment>(segs), tokens.data(), B, std::span<const int64_t>(rows));
  for (KvSequence* s : seqs) s->set_length(s->length() + 1);
}

}  // namespace keel::serve
