// RunWorld: MPI world and data parallelism for a training command.
#include "dist/run_world.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "core/error.h"

namespace keel::dist {

RunWorld::RunWorld(const io::DistSection& cfg) : cfg_(cfg) {
  if (!World::launched_by_mpirun()) return;
  world_ = std::make_unique<World>();
  world_->comm().set_timeout(cfg_.timeout_s);
}

RunWorld::~RunWorld() = default;

train::ReplicaSync* RunWorld::attach(model::Model& model, train::Trainer& trainer) {
  const bool diloco = cfg_.sync == "diloco";
  GradCodecConfig codec;
  codec.kind = parse_grad_codec(cfg_.compression, "dist.compression");
  codec.topk_fraction = cfg_.topk_fraction;
  codec.topk_warmup_steps = cfg_.topk_warmup_steps;
  codec.topk_warmup_start = cfg_.topk_warmup_start;
  codec.topk_int8 = cfg_.topk_values == "int8";
  codec.int8_block = cfg_.int8_block;
  if (size() == 1) {
    // Nothing crosses a link in a world of one: asking for it is a mistake.
    if (codec.kind != GradCodecKind::None)
      fail<ConfigError>(
          "dist.compression = \"{}\" needs a world of more than one rank (run under mpirun or "
          "keel launch -n N), or set dist.compression = \"none\"",
          cfg_.compression);
    if (diloco)
      fail<ConfigError>(
          "dist.sync = \"diloco\" needs a world of more than one rank (run under mpirun or keel "
          "launch -n N), or set dist.sync = \"allreduce\"");
    return nullptr;
  }
  const train::TrainerOptions& o = trainer.options();
  if (o.data_world != size() || o.data_rank != rank())
    fail<DistError>("rank {} of {}: the trainer reads data slice {} of {}", rank(), size(),
                    o.data_rank, o.data_world);
  if (diloco) {
    DilocoOptions d;
    d.inner_steps = cfg_.diloco_steps;
    d.warmup_steps = cfg_.diloco_warmup_steps;
    d.outer = {cfg_.outer_lr, cfg_.outer_momentum};
    d.codec = codec;
    d.variance_keep = local_variance_keep();
    d.total_steps = o.steps;
    diloco_ = std::make_unique<DilocoSync>(world_->comm(), model, trainer.optimizer(), d);
    return diloco_.get();
  }
  DataParallelOptions dpo;
  dpo.codec = codec;
  dpo.compress_update = cfg_.compress_update;
  dpo.variance_keep = local_variance_keep();
  dpo.zero1 = cfg_.zero1;
  dpo.bucket_mb = cfg_.bucket_mb;
  dpo.overlap = cfg_.overlap;
  dpo.grad_accum = o.grad_accum;
  dp_ = std::make_unique<DataParallel>(world_->comm(), model, dpo);
  dp_->shard_optimizer(trainer.optimizer());
  return dp_.get();
}

void RunWorld::detach() {
  dp_.reset();
  diloco_.reset();
}

void RunWorld::barrier(double timeout_s) {
  if (!world_) return;
  Communicator& c = world_->comm();
  const double saved = c.timeout_s();
  c.set_timeout(std::max(saved, timeout_s));
  c.barrier();
  c.set_timeout(saved);
}

std::function<std::vector<uint64_t>(uint64_t)> RunWorld::allgather_u64() {
  if (size() == 1) return nullptr;
  Communicator* c = &world_->comm();
  return [c](uint64_t x) { return allgather_value(*c, x); };
}

void RunWorld::abort(int exit_code) {
  std::fflush(stdout);
  std::fflush(stderr);
  if (world_) world_->abort(exit_code);
  std::_Exit(exit_code);
}

}  // namespace keel::dist
