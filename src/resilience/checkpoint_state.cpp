#include "resilience/checkpoint_state.h"

#include <algorithm>

#include "backend/device_tensor.h"

namespace keel::resilience {

namespace {

// Copies src into dst[i], reallocating dst[i] only when its name, dtype or
// shape differ from what is wanted.
void copy_slot(backend::Backend& be, std::vector<io::NamedTensor>& dst, size_t i,
               const std::string& name, const Tensor& src, bool alias) {
  if (i >= dst.size()) dst.resize(i + 1);
  io::NamedTensor& slot = dst[i];
  if (alias && be.host_memory() && src.is_contiguous()) {
    if (slot.name != name) slot.name = name;
    slot.tensor = src;
    return;
  }
  if (slot.name != name || !slot.tensor.defined() || slot.tensor.dtype() != src.dtype() ||
      slot.tensor.shape() != src.shape()) {
    slot.name = name;
    slot.tensor = Tensor::zeros(src.shape(), src.dtype());
  }
  if (src.is_contiguous()) {
    backend::copy_to_host(be, src, slot.tensor);  // a memcpy, or a device's one read-back
  } else {
    slot.tensor = src.clone();
  }
}

}  // namespace

size_t CheckpointState::nbytes() const {
  size_t n = 0;
  for (const auto* list : {&params, &optimizer, &model_state, &extra})
    for (const auto& t : *list) n += t.tensor.nbytes();
  return n;
}

CheckpointLayout training_state_layout(train::Trainer& trainer) {
  CheckpointLayout l;
  const auto& ps = trainer.optimizer().params();
  for (auto* p : ps) l.params.push_back({p->name, p->value.dtype(), p->value.shape()});
  for (size_t i = 0; i < ps.size(); ++i)
    l.optimizer.push_back(
        {"exp_avg." + ps[i]->name, DType::F32, trainer.optimizer().m()[i].shape()});
  for (size_t i = 0; i < ps.size(); ++i)
    l.optimizer.push_back(
        {"exp_avg_sq." + ps[i]->name, DType::F32, trainer.optimizer().v()[i].shape()});
  for (auto& [name, t] : trainer.model().state_buffers())
    l.model_state.push_back({name, t->dtype(), t->shape()});
  return l;
}

void capture_training_state(train::Trainer& trainer, CheckpointState& out,
                            std::pair<size_t, size_t> moments, bool alias) {
  train::AdamW& opt = trainer.optimizer();
  backend::Backend& be = trainer.model().backend();
  const auto& ps = opt.params();
  for (size_t i = 0; i < ps.size(); ++i)
    copy_slot(be, out.params, i, ps[i]->name, ps[i]->value, alias);
  out.params.resize(ps.size());
  const size_t mb = std::min(moments.first, ps.size()), me = std::min(moments.second, ps.size());
  const size_t nm = me > mb ? me - mb : 0;
  for (size_t i = mb; i < me; ++i)
    copy_slot(be, out.optimizer, i - mb, "exp_avg." + ps[i]->name, opt.m()[i], alias);
  for (size_t i = mb; i < me; ++i)
    copy_slot(be, out.optimizer, nm + i - mb, "exp_avg_sq." + ps[i]->name, opt.v()[i], alias);
  out.optimizer.resize(2 * nm);
  const auto bufs = trainer.model().state_buffers();
  for (size_t i = 0; i < bufs.size(); ++i)
    copy_slot(be, out.model_state, i, bufs[i].first, *bufs[i].second, alias);
  out.model_state.resize(bufs.size());
  out.manifest.step = trainer.step_count();
  out.manifest.optimizer_t = opt.t();
}

}  // namespace keel::resilience
