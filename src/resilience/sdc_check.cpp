#include "resilience/sdc_check.h"

#include <map>

// XXH3 dispatched at run time to the widest vectors the CPU has: the inlined
// build is SSE2 only (4 GB/s here, against 60 in cache with AVX-512).
#include <xxh_x86dispatch.h>

#include "backend/device_tensor.h"
#include "core/error.h"
#include "resilience/piece_digest.h"

namespace keel::resilience {

namespace {

// Folds the piecewise digest of t's bytes into st, on the backend's threads
// (idle between steps); a device tensor is read back first (one
// synchronisation).
void update(XXH3_state_t* st, backend::Backend* be, const Tensor& t) {
  if (!t.on_host() && !be)
    fail("sdc check: tensor {} lives on {} and no backend was given", t.desc(), t.device_name());
  const Tensor h = t.on_host() ? t : backend::to_host(*be, t);
  const uint64_t d =
      piece_digest(static_cast<const std::byte*>(h.raw()), h.nbytes(), be ? be->threads() : 1);
  XXH3_64bits_update(st, &d, sizeof d);
}

}  // namespace

uint64_t parameters_hash(const std::vector<nn::Parameter*>& params, backend::Backend* be) {
  XXH3_state_t* st = XXH3_createState();
  if (!st) fail("parameters_hash: out of memory");
  XXH3_64bits_reset(st);
  // A device's parameters come back in one read, not one per tensor.
  std::vector<Tensor> host;
  if (be && !be->host_memory()) {
    std::vector<const Tensor*> ts;
    for (const nn::Parameter* p : params) ts.push_back(&p->value);
    host = backend::to_host_all(*be, ts);
  }
  for (size_t i = 0; i < params.size(); ++i) {
    const nn::Parameter* p = params[i];
    XXH3_64bits_update(st, p->name.data(), p->name.size());
    const int64_t n = p->numel();
    XXH3_64bits_update(st, &n, sizeof n);
    update(st, be, host.empty() ? p->value : host[i]);
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
      if (t->defined()) update(st, &opt.backend(), *t);
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
