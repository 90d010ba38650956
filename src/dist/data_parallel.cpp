// DataParallel: gradient buckets reduced during backward, the replica mean,
// and the ZeRO-1 sharded update with its parameter and moment gathers.
#include "dist/data_parallel.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>

#include "core/error.h"
#include "core/log.h"
#include "dist/flat_params.h"
#include "dist/replica_state.h"
#include "dist/zero_partition.h"
#include "model/causal_lm.h"
#include "train/adamw.h"

namespace keel::dist {

DataParallel::DataParallel(Communicator& comm, model::Model& model, DataParallelOptions opt)
    : comm_(comm),
      be_(model.backend()),
      stage_(model.backend()),
      opt_(opt),
      params_(model.parameters()) {
  if (opt_.grad_accum < 1) fail<DistError>("DataParallel: grad_accum {} < 1", opt_.grad_accum);
  if (!(opt_.bucket_mb > 0))
    fail<DistError>("DataParallel: bucket_mb {} must be > 0", opt_.bucket_mb);
  std::vector<int64_t> numels;
  for (auto* p : params_) {
    if (p->grad.dtype() != DType::F32 || !p->grad.is_contiguous() ||
        p->value.dtype() != DType::F32 || !p->value.is_contiguous())
      fail<DistError>("DataParallel: parameter '{}' needs contiguous f32 value and grad", p->name);
    numels.push_back(p->numel());
  }
  // Buckets in reverse parameter order: the order in which backward finishes them.
  const size_t cap = std::max<size_t>(1, size_t(opt_.bucket_mb * double(1 << 20)) / sizeof(float));
  for (size_t k = params_.size(); k-- > 0;) {
    if (buckets_.empty() || buckets_.back().numel >= cap) buckets_.emplace_back();
    Bucket& b = buckets_.back();
    b.params.push_back(k);
    b.numel += size_t(params_[k]->numel());
    bucket_of_[params_[k]] = buckets_.size() - 1;
  }
  if (opt_.zero1) {
    bounds_ = zero_partition(numels, comm_.size());
  } else {
    bounds_.assign(size_t(comm_.size()) + 1, params_.size());
    bounds_[0] = 0;
  }
  if (opt_.codec.kind != GradCodecKind::None) {
    int64_t n = 0;
    for (int64_t k : numels) n += k;
    compressed_ = std::make_unique<CompressedSum>(comm_, opt_.codec, n);
    flat_.resize(size_t(n));
    summed_.resize(size_t(n));
    if (opt_.compress_update) {
      if (opt_.zero1)
        fail<ConfigError>(
            "dist.compress_update: each rank keeps its own optimizer moments, so dist.zero1 must "
            "be false");
      before_.resize(size_t(n));
    }
    opt_.overlap = false;
  } else if (opt_.compress_update) {
    fail<ConfigError>("dist.compress_update: needs a codec (dist.compression other than none)");
  }
  if (opt_.overlap) {
    listened_ = dynamic_cast<model::CausalLM*>(&model);
    if (listened_) listened_->set_grad_listener(this);
  }
}

DataParallel::~DataParallel() {
  if (listened_) listened_->set_grad_listener(nullptr);
}

std::pair<size_t, size_t> DataParallel::shard(int r) const {
  if (!opt_.zero1) return {0, params_.size()};
  return {bounds_[size_t(r)], bounds_[size_t(r) + 1]};
}

void DataParallel::check_params(const std::vector<nn::Parameter*>& params, const char* who) const {
  if (params != params_)
    fail<DistError>(
        "DataParallel::{}: rank {} step {}: got {} parameters that are not the model's {} in order",
        who, comm_.rank(), step_, params.size(), params_.size());
}

void DataParallel::begin_step(int64_t step) {
  step_ = step;
  in_step_ = true;
  backwards_ = 0;
  next_launch_ = 0;
  stats_ = DataParallelStats{};
  for (Bucket& b : buckets_) {
    b.sum.reset();  // a step that failed half-way leaves sums behind; they are abandoned
    b.remaining = b.params.size();
    b.overlapped = false;
  }
}

void DataParallel::launch(Bucket& b) {
  std::vector<float> data = comm_.sum_buffer(b.numel);
  // A memcpy per tensor on host-memory backends; from a device, the bucket's
  // gradients gathered on the device and read back in one wait.
  stage_.to_host(
      params_, b.params, [&](size_t i) -> const Tensor& { return params_[i]->grad; }, data);
  // A parameter without a gradient adds zeros (the recycled buffer holds old sums there).
  for_each_slice(params_, b.params, [&](size_t i, size_t off, size_t n) {
    if (!params_[i]->grad.defined()) std::fill_n(data.begin() + std::ptrdiff_t(off), n, 0.f);
  });
  const uint64_t N = uint64_t(comm_.size());
  const uint64_t chunk = (b.numel + N - 1) / N;
  stats_.bytes_sent += 2 * (N - 1) * chunk * sizeof(float);  // all-to-all + all-gather
  b.sum = comm_.start_allreduce_sum(std::move(data));
  ++stats_.buckets;
}

// Buckets start strictly in bucket order, so every rank issues the same
// collectives in the same order whatever order gradients became final in.
void DataParallel::launch_ready_buckets(bool all) {
  if (compressed_) return;
  while (next_launch_ < buckets_.size() && (all || buckets_[next_launch_].remaining == 0)) {
    Bucket& b = buckets_[next_launch_++];
    b.overlapped = !all;
    if (b.overlapped) ++stats_.buckets_overlapped;
    launch(b);
  }
}

void DataParallel::on_grad_ready(nn::Parameter& p) {
  if (!in_step_ || backwards_ != opt_.grad_accum - 1) return;  // not the last micro-batch
  const auto it = bucket_of_.find(&p);
  if (it == bucket_of_.end()) return;
  Bucket& b = buckets_[it->second];
  if (b.remaining > 0 && --b.remaining == 0) launch_ready_buckets(false);
  // A single-threaded rank progresses MPI only inside MPI calls: poke the
  // sums in flight (testing one advances all) so they move while backward goes on.
  if (next_launch_ > 0) buckets_[next_launch_ - 1].sum->test();
}

void DataParallel::on_backward_end() {
  if (!in_step_) return;
  ++backwards_;
  if (backwards_ == opt_.grad_accum) launch_ready_buckets(true);
}

void DataParallel::finish_gradients(const std::vector<nn::Parameter*>& params) {
  check_params(params, "finish_gradients");
  if (!in_step_)
    fail<DistError>("DataParallel::finish_gradients: rank {}: begin_step was not called",
                    comm_.rank());
  if (listened_ && backwards_ != opt_.grad_accum)
    fail<DistError>(
        "DataParallel: rank {} step {}: {} backward passes in the step, but grad_accum is {}",
        comm_.rank(), step_, backwards_, opt_.grad_accum);
  in_step_ = false;
  const auto t0 = std::chrono::steady_clock::now();
  const float N = float(comm_.size());
  if (compressed_ && opt_.compress_update) {
    // Each rank keeps its own gradient for its own AdamW step; the replicas
    // only have to agree on whether the step is skipped (a non-finite
    // gradient on one rank skips it everywhere).
    double ss = 0;
    if (be_.host_memory()) {
      for (auto* p : params_) {
        const float* g = p->grad.data<float>();
        for (int64_t j = 0; j < p->numel(); ++j) ss += double(g[j]) * double(g[j]);
      }
    } else {
      // Only finiteness matters: the device's sums of squares, read back once.
      ss = train::grad_global_norm(be_, params_);
    }
    const std::vector<uint64_t> bad = allgather_value(comm_, uint64_t(!std::isfinite(ss)));
    stats_.bytes_sent += uint64_t(comm_.size() - 1) * sizeof(uint64_t);
    if (std::find(bad.begin(), bad.end(), uint64_t(1)) != bad.end()) {
      std::fill(flat_.begin(), flat_.end(), std::numeric_limits<float>::quiet_NaN());
      stage_.from_host(flat_, params_, &nn::Parameter::grad);
    }
    stats_.wait_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return;
  }
  if (compressed_) {
    // The codec and its error feedback are host code: on a device the
    // gradient crosses once each way (FlatStage: one wait down, one up).
    stage_.to_host(params_, &nn::Parameter::grad, flat_);
    stats_.bytes_sent +=
        compressed_->sum(flat_, summed_, "gradient", topk_fraction_at(opt_.codec, step_));
    for (float& s : summed_) s /= N;
    stage_.from_host(summed_, params_, &nn::Parameter::grad);
    stats_.wait_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return;
  }
  launch_ready_buckets(true);
  for (Bucket& b : buckets_) {
    b.sum->wait();
    const std::span<const float> r = b.sum->result();
    if (!be_.host_memory()) {  // one upload per bucket, copied out on the device
      staged_.resize(b.numel);
      for (size_t j = 0; j < b.numel; ++j) staged_[j] = r[j] / N;
      stage_.from_host(staged_, params_, b.params,
                       [&](size_t i) -> const Tensor& { return params_[i]->grad; });
      b.sum.reset();
      continue;
    }
    for_each_slice(params_, b.params, [&](size_t i, size_t off, size_t n) {
      float* d = params_[i]->grad.data<float>();
      for (size_t j = 0; j < n; ++j) d[j] = r[off + j] / N;
    });
    b.sum.reset();
  }
  stats_.wait_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double DataParallel::mean(double x) {
  stats_.bytes_sent += uint64_t(comm_.size() - 1) * sizeof(double);
  return mean_in_rank_order(comm_, x);
}

void DataParallel::sum_state(std::span<float> x) {
  comm_.allreduce_sum(x);
  stats_.bytes_sent += uint64_t(comm_.size() - 1) * x.size() * sizeof(float);
}

template <class Get>
void DataParallel::gather_shards(Get get, const char* what) {
  const int N = comm_.size(), me = comm_.rank();
  const auto shard = [&](int r) {
    return std::views::iota(bounds_[size_t(r)], bounds_[size_t(r) + 1]);
  };
  std::vector<size_t> counts(size_t(N), 0);
  for (int r = 0; r < N; ++r)
    for_each_slice(params_, shard(r),
                   [&](size_t, size_t, size_t n) { counts[size_t(r)] += n * sizeof(float); });
  std::vector<float> mine(counts[size_t(me)] / sizeof(float));
  for_each_slice(params_, shard(me), [&](size_t i, size_t, size_t n) {
    const Tensor& t = get(i);
    if (!t.defined() || t.nbytes() != n * sizeof(float))
      fail<DistError>("DataParallel: rank {}: {} of owned parameter '{}' is missing", me, what,
                      params_[i]->name);
  });
  // On a device: this rank's shard down in one wait, each other shard up in one.
  stage_.to_host(params_, shard(me), get, mine);
  size_t total = 0;
  for (size_t c : counts) total += c;
  std::vector<float> all(total / sizeof(float));
  comm_.allgatherv(std::as_bytes(std::span<const float>(mine)),
                   std::as_writable_bytes(std::span<float>(all)), counts);
  stats_.bytes_sent += uint64_t(N - 1) * counts[size_t(me)];
  size_t base = 0;  // elements of the lower ranks' shards
  for (int r = 0; r < N; ++r) {
    const size_t n = counts[size_t(r)] / sizeof(float);
    if (r != me)
      stage_.from_host(std::span<const float>(all).subspan(base, n), params_, shard(r), get);
    base += n;
  }
}

void DataParallel::shard_optimizer(train::AdamW& opt) {
  opt_moments_ = &opt;
  if (!opt_.zero1) return;
  check_params(opt.params(), "shard_optimizer");
  const auto [b, e] = shard(comm_.rank());
  if (opt.shard_begin() != b || opt.shard_end() != e)
    opt.set_shard(b, e);
  else
    opt.release_unowned_moments();
}

void DataParallel::optimizer_step(train::AdamW& opt, double lr, float grad_scale) {
  if (compressed_ && opt_.compress_update) {
    // update := before - after of this rank's own AdamW step; the replicas
    // then all move from `before` by the mean decoded update, so they keep
    // the same bits while their moments differ.
    // On a device the parameters cross three times (before, after, back):
    // the codec needs the update on the host, and `before` read back here
    // (rather than kept from the last step) stays right after a restore.
    stage_.to_host(params_, &nn::Parameter::value, before_);
    opt.step(lr, grad_scale, opt_.variance_keep);
    stage_.to_host(params_, &nn::Parameter::value, flat_);
    for (size_t j = 0; j < flat_.size(); ++j) flat_[j] = before_[j] - flat_[j];
    stats_.bytes_sent +=
        compressed_->sum(flat_, summed_, "update", topk_fraction_at(opt_.codec, step_));
    const float N = float(comm_.size());
    for (size_t j = 0; j < flat_.size(); ++j) flat_[j] = before_[j] - summed_[j] / N;
    stage_.from_host(flat_, params_, &nn::Parameter::value);
    return;
  }
  if (!opt_.zero1) {
    opt.step(lr, grad_scale);  // identical gradients and state: identical updates
    return;
  }
  shard_optimizer(opt);
  opt.step(lr, grad_scale);
  gather_shards([&](size_t i) -> Tensor& { return params_[i]->value; }, "the value");
}

void DataParallel::gather_optimizer_state(train::AdamW& opt) {
  if (compressed_) residuals_ = gather_rank_vectors(comm_, compressed_->residual());
  if (compressed_ && opt_.compress_update) {
    check_params(opt.params(), "gather_optimizer_state");
    std::vector<float> m(flat_.size(), 0.f), v(flat_.size(), 0.f);
    stage_.to_host(params_, opt.m(), m);
    stage_.to_host(params_, opt.v(), v);
    saved_m_ = gather_rank_vectors(comm_, m);
    saved_v_ = gather_rank_vectors(comm_, v);
  }
  if (!opt_.zero1) return;
  check_params(opt.params(), "gather_optimizer_state");
  opt.materialize_moments();
  gather_shards([&](size_t i) -> Tensor& { return opt.m()[i]; }, "the first moment");
  gather_shards([&](size_t i) -> Tensor& { return opt.v()[i]; }, "the second moment");
}

void DataParallel::save_state(nlohmann::json& j, std::vector<io::NamedTensor>& tensors) {
  if (!compressed_) return;
  if (residuals_.size() != size_t(comm_.size()))
    fail<DistError>("DataParallel: rank {}: gather_optimizer_state must precede save_state",
                    comm_.rank());
  j["gradient_compression"] = {{"codec", grad_codec_name(opt_.codec.kind)},
                               {"world_size", comm_.size()}};
  add_rank_tensors("dist.grad_residual", residuals_, tensors);
  residuals_.clear();
  if (opt_.compress_update) {
    j["gradient_compression"]["compress_update"] = true;
    j["gradient_compression"]["variance_keep"] = opt_.variance_keep;
    // Rank 0's moments are the checkpoint's optimizer state already.
    add_rank_tensors("dist.update.exp_avg", saved_m_, tensors, 1);
    add_rank_tensors("dist.update.exp_avg_sq", saved_v_, tensors, 1);
    saved_m_.clear();
    saved_v_.clear();
  }
}

void DataParallel::load_state(const nlohmann::json& j, const io::SafetensorsFile* f) {
  (void)j;
  if (!compressed_) return;
  if (opt_.compress_update && comm_.rank() > 0) {
    // Rank 0 keeps the optimizer state restored from the checkpoint.
    if (!opt_moments_)
      fail<DistError>("DataParallel: rank {}: load_state before the optimizer was attached",
                      comm_.rank());
    const int me = comm_.rank();
    std::vector<float> m(flat_.size()), v(flat_.size());
    if (load_rank_tensor(f, "dist.update.exp_avg", me, m) &&
        load_rank_tensor(f, "dist.update.exp_avg_sq", me, v)) {
      opt_moments_->materialize_moments();
      stage_.from_host(m, params_, opt_moments_->m());
      stage_.from_host(v, params_, opt_moments_->v());
    } else {
      log().warn("rank {}: the checkpoint holds no optimizer moments for this rank; using rank 0's",
                 me);
    }
  }
  std::span<float> r = compressed_->residual();
  if (!load_rank_tensor(f, "dist.grad_residual", comm_.rank(), r)) {
    std::fill(r.begin(), r.end(), 0.f);
    log().warn("rank {}: the checkpoint holds no gradient residual for this rank; starting from 0",
               comm_.rank());
  }
}

}  // namespace keel::dist
