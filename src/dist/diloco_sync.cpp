// DiLoCo: local inner steps, then the outer Nesterov step on the mean
// pseudo-gradient; the per-rank inner state goes into checkpoints.
#include "dist/diloco_sync.h"

#include <chrono>
#include <cstring>

#include "core/error.h"
#include "core/log.h"
#include "dist/flat_params.h"
#include "dist/replica_state.h"

namespace keel::dist {

DilocoSync::DilocoSync(Communicator& comm, model::Model& model, train::AdamW& inner,
                       DilocoOptions opt)
    : comm_(comm),
      inner_(inner),
      opt_(opt),
      params_(model.parameters()),
      stage_(model.backend()),
      outer_(opt.outer, [&] {
        int64_t n = 0;
        for (auto* p : model.parameters()) n += p->numel();
        return n;
      }()) {
  if (opt_.inner_steps < 1)
    fail<ConfigError>("dist.diloco_steps: must be >= 1, got {}", opt_.inner_steps);
  if (inner_.params() != params_)
    fail<DistError>("DilocoSync: the optimizer's parameters are not the model's");
  if (inner_.sharded())
    fail<DistError>("DilocoSync: the inner optimizer must not be sharded (dist.zero1)");
  for (auto* p : params_) {
    if (p->value.dtype() != DType::F32 || !p->value.is_contiguous())
      fail<DistError>("DilocoSync: parameter '{}' needs a contiguous f32 value", p->name);
    n_ += p->numel();
  }
  anchor_.resize(size_t(n_));
  delta_.resize(size_t(n_));
  mean_delta_.resize(size_t(n_));
  if (opt_.warmup_steps < 0)
    fail<ConfigError>("dist.diloco_warmup_steps: must be >= 0, got {}", opt_.warmup_steps);
  if (opt_.codec.kind != GradCodecKind::None) {
    compressed_ = std::make_unique<CompressedSum>(comm_, opt_.codec, n_);
    if (opt_.warmup_steps > 0)
      grad_compressed_ = std::make_unique<CompressedSum>(comm_, opt_.codec, n_);
  }
  if (opt_.warmup_steps > 0)
    for (auto* p : params_)
      if (p->grad.dtype() != DType::F32 || !p->grad.is_contiguous())
        fail<DistError>("DilocoSync: parameter '{}' needs a contiguous f32 gradient", p->name);
}

void DilocoSync::begin_step(int64_t step) {
  step_ = step;
  stats_ = DilocoStats{};
  if (warming(step)) {
    anchored_ = false;  // the first round starts after the warm-up
    return;
  }
  // A round starts where the replicas agree: at the start, after a resume
  // (checkpoints are taken only then) or after the previous outer step.
  if (!anchored_) {
    if (!synced_)
      fail<DistError>("DilocoSync: rank {} step {}: no round start to anchor to", comm_.rank(),
                      step + 1);
    stage_.to_host(params_, &nn::Parameter::value, anchor_);
    anchored_ = true;
  }
}

void DilocoSync::finish_gradients(const std::vector<nn::Parameter*>& params) {
  if (params != params_)
    fail<DistError>("DilocoSync: rank {} step {}: parameters are not the model's", comm_.rank(),
                    step_ + 1);
  if (warming(step_)) average_gradients();
}

void DilocoSync::average_gradients() {
  stage_.to_host(params_, &nn::Parameter::grad, delta_);
  sum_deltas(grad_compressed_.get(), "gradient");
  const float N = float(comm_.size());
  for (float& d : mean_delta_) d /= N;
  stage_.from_host(mean_delta_, params_, &nn::Parameter::grad);
}

void DilocoSync::sum_deltas(CompressedSum* codec, const char* what) {
  if (codec) {
    stats_.bytes_sent += codec->sum(delta_, mean_delta_, what);
    return;
  }
  mean_delta_ = delta_;
  comm_.allreduce_sum(mean_delta_);
  const uint64_t N = uint64_t(comm_.size());
  stats_.bytes_sent += 2 * (N - 1) * ((uint64_t(n_) + N - 1) / N) * sizeof(float);
}

double DilocoSync::mean(double x) {
  stats_.bytes_sent += uint64_t(comm_.size() - 1) * sizeof(double);
  return mean_in_rank_order(comm_, x);
}

void DilocoSync::optimizer_step(train::AdamW& opt, double lr, float grad_scale) {
  opt.step(lr, grad_scale, warming(step_) ? 1.f : opt_.variance_keep);
}

void DilocoSync::sum_state(std::span<float> x) {
  comm_.allreduce_sum(x);
  stats_.bytes_sent += uint64_t(comm_.size() - 1) * x.size() * sizeof(float);
}

bool DilocoSync::end_step() {
  const int64_t done = step_ + 1;
  if (warming(step_)) return false;  // same gradients, same optimizer: same parameters
  synced_ = false;
  if (done % opt_.inner_steps != 0 && done != opt_.total_steps) return false;
  outer_step();
  return true;
}

void DilocoSync::outer_step() {
  const auto t0 = std::chrono::steady_clock::now();
  // delta := anchor - local parameters (the round's pseudo-gradient). The
  // outer step is host code on host copies: once a round the parameters
  // cross down and the new anchor back up (the anchor and the outer momentum
  // stay on the host between rounds), which on a device is two waits a round
  // against the many kernels a device-side outer step would need.
  stage_.to_host(params_, &nn::Parameter::value, delta_);
  for (size_t i = 0; i < delta_.size(); ++i) delta_[i] = anchor_[i] - delta_[i];
  sum_deltas(compressed_.get(), "pseudo-gradient");
  const float inv = 1.f / float(comm_.size());
  for (float& d : mean_delta_) d *= inv;
  outer_.step(anchor_, mean_delta_);
  stage_.from_host(anchor_, params_, &nn::Parameter::value);
  synced_ = true;
  stats_.outer_step = true;
  stats_.outer_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void DilocoSync::gather_optimizer_state(train::AdamW& opt) {
  if (&opt != &inner_) fail<DistError>("DilocoSync: asked to gather another optimizer's state");
  std::vector<float> m(size_t(n_), 0.f), v(size_t(n_), 0.f);
  stage_.to_host(params_, inner_.m(), m);
  stage_.to_host(params_, inner_.v(), v);
  saved_m_ = gather_rank_vectors(comm_, m);
  saved_v_ = gather_rank_vectors(comm_, v);
  saved_t_ = allgather_value(comm_, inner_.t());
  if (compressed_) saved_residual_ = gather_rank_vectors(comm_, compressed_->residual());
  if (grad_compressed_)
    saved_grad_residual_ = gather_rank_vectors(comm_, grad_compressed_->residual());
}

void DilocoSync::save_state(nlohmann::json& j, std::vector<io::NamedTensor>& tensors) {
  if (saved_m_.size() != size_t(comm_.size()))
    fail<DistError>("DilocoSync: rank {}: gather_optimizer_state must precede save_state",
                    comm_.rank());
  if (!synced_)
    fail<DistError>("DilocoSync: rank {} step {}: a checkpoint inside a round (replicas differ)",
                    comm_.rank(), step_ + 1);
  j["diloco"] = {{"inner_steps", opt_.inner_steps},
                 {"world_size", comm_.size()},
                 {"inner_t", saved_t_},
                 {"codec", grad_codec_name(opt_.codec.kind)},
                 {"warmup_steps", opt_.warmup_steps},
                 {"variance_keep", opt_.variance_keep}};
  const std::span<const float> mom = outer_.momentum();
  tensors.push_back({"dist.diloco.outer_momentum",
                     Tensor::from_f32(std::vector<float>(mom.begin(), mom.end()), Shape{n_})});
  // Rank 0's moments are the checkpoint's optimizer state already.
  add_rank_tensors("dist.diloco.exp_avg", saved_m_, tensors, 1);
  add_rank_tensors("dist.diloco.exp_avg_sq", saved_v_, tensors, 1);
  if (compressed_) add_rank_tensors("dist.diloco.residual", saved_residual_, tensors);
  if (grad_compressed_)
    add_rank_tensors("dist.diloco.grad_residual", saved_grad_residual_, tensors);
  saved_grad_residual_.clear();
  saved_m_.clear();
  saved_v_.clear();
  saved_residual_.clear();
}

void DilocoSync::load_state(const nlohmann::json& j, const io::SafetensorsFile* f) {
  const std::string mom = "dist.diloco.outer_momentum";
  std::span<float> v = outer_.momentum();
  if (!f || !f->contains(mom))
    fail<IoError>(
        "{}: no '{}': the checkpoint was not written by a DiLoCo run (dist.sync = \"diloco\")",
        f ? f->path() : std::string("extra.safetensors (missing)"), mom);
  Tensor t = f->get(mom);
  if (t.dtype() != DType::F32 || t.numel() != n_)
    fail<IoError>("{}: tensor '{}' has {} elements, expected {}", f->path(), mom, t.numel(), n_);
  std::memcpy(v.data(), t.raw(), size_t(n_) * sizeof(float));
  const int me = comm_.rank();
  // Rank 0 keeps the optimizer state restored from the checkpoint; others
  // take theirs when the saving world had them (a grown world keeps rank 0's).
  if (me > 0) {
    const size_t n = static_cast<size_t>(n_);
    std::vector<float> m(n), s(n);
    if (load_rank_tensor(f, "dist.diloco.exp_avg", me, m) &&
        load_rank_tensor(f, "dist.diloco.exp_avg_sq", me, s)) {
      stage_.from_host(m, params_, inner_.m());
      stage_.from_host(s, params_, inner_.v());
    } else {
      log().warn(
          "rank {}: the checkpoint holds no inner optimizer state for this rank; using "
          "rank 0's",
          me);
    }
  }
  const nlohmann::json d = j.value("diloco", nlohmann::json::object());
  const auto ts = d.value("inner_t", std::vector<int64_t>{});
  if (size_t(me) < ts.size()) inner_.set_t(ts[size_t(me)]);
  if (compressed_ && !load_rank_tensor(f, "dist.diloco.residual", me, compressed_->residual())) {
    std::span<float> r = compressed_->residual();
    std::fill(r.begin(), r.end(), 0.f);
    log().warn("rank {}: the checkpoint holds no pseudo-gradient residual for this rank", me);
  }
  if (grad_compressed_ &&
      !load_rank_tensor(f, "dist.diloco.grad_residual", me, grad_compressed_->residual())) {
    std::span<float> r = grad_compressed_->residual();
    std::fill(r.begin(), r.end(), 0.f);
    log().warn("rank {}: the checkpoint holds no warm-up gradient residual for this rank", me);
  }
  synced_ = true;
  anchored_ = false;  // the restored parameters start the next round
}

}  // namespace keel::dist
