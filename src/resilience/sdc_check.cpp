#include "resilience/sdc_check.h"

#include <map>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "core/error.h"

namespace keel::resilience {

uint64_t parameters_hash(const std::vector<nn::Parameter*>& params) {
  XXH3_state_t* st = XXH3_createState();
  if (!st) fail("parameters_hash: out of memory");
  XXH3_64bits_reset(st);
  for (const nn::Parameter* p : params) {
    XXH3_64bits_update(st, p->name.data(), p->name.size());
    const int64_t n = p->numel();
    XXH3_64bits_update(st, &n, sizeof n);
    XXH3_64bits_update(st, p->value.raw(), p->value.nbytes());
  }
  const uint64_t h = XXH3_64bits_digest(st);
  XXH3_freeState(st);
  return h;
}

uint64_t moments_hash(const train::AdamW& opt) {
  XXH3_state_t* st = XXH3_createState();
  if (!st) fail("moments_hash: out of memory");
  XXH3_64bits_reset(st);
  for (size_t i = opt.shard_begin(); i < opt.shard_end(); ++i)
    for (const Tensor* t : {&opt.m()[i], &opt.v()[i]})
      if (t->defined()) XXH3_64bits_update(st, t->raw(), t->nbytes());
  const uint64_t h = XXH3_64bits_digest(st);
  XXH3_freeState(st);
  return h;
}

uint64_t mix_hash(uint64_t a, uint64_t b) {
  const uint64_t ab[2] = {a, b};
  return XXH3_64bits(ab, sizeof ab);
}

SdcVerdict sdc_vote(const std::vector<uint64_t>& hashes) {
  SdcVerdict v;
  if (hashes.empty()) return v;
  std::map<uint64_t, int> counts;
  for (uint64_t h : hashes) ++counts[h];
  v.ok = counts.size() == 1;
  for (auto& [h, c] : counts)
    if (2 * c > int(hashes.size())) {
      v.majority = h;
      v.has_majority = true;
    }
  if (v.has_majority)
    for (size_t r = 0; r < hashes.size(); ++r)
      if (hashes[r] != v.majority) v.odd_ranks.push_back(int(r));
  return v;
}

SdcVerdict sdc_check(const std::vector<nn::Parameter*>& params, const AllGatherU64& allgather) {
  const uint64_t h = parameters_hash(params);
  return sdc_vote(allgather ? allgather(h) : std::vector<uint64_t>{h});
}

}  // namespace keel::resilience
