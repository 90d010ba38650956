// RunWorld: what a training command needs from the dist layer. Under mpirun
// it joins the MPI world and gives the trainer its DataParallel ReplicaSync;
// started directly it is a world of one and changes nothing.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "dist/data_parallel.h"
#include "dist/diloco_sync.h"
#include "dist/mpi_world.h"
#include "io/config.h"
#include "train/trainer.h"

namespace keel::dist {

class RunWorld {
 public:
  // Joins MPI when launched by mpirun (World::launched_by_mpirun), with every
  // collective bounded by cfg.timeout_s.
  explicit RunWorld(const io::DistSection& cfg);
  ~RunWorld();

  int rank() const { return world_ ? world_->rank() : 0; }
  int size() const { return world_ ? world_->size() : 1; }

  // For a trainer built with data_world = size() and data_rank = rank():
  // the ReplicaSync to install (null in a world of one): DataParallel
  // (gradient compression per dist.compression), or DilocoSync with
  // dist.sync = "diloco". With ZeRO-1 the optimizer is sharded at once.
  // ConfigError when compression or DiLoCo is asked of a world of one.
  // model and trainer must outlive this.
  train::ReplicaSync* attach(model::Model& model, train::Trainer& trainer);
  // Destroys the sync attach() made. It holds the model's gradient listener
  // and, on a device, staging memory of the model's backend: a caller whose
  // model or backend dies before this RunWorld detaches first.
  void detach();
  DataParallel* data_parallel() { return dp_.get(); }
  // The world's communicator (null in a world of one).
  Communicator* comm() { return world_ ? &world_->comm() : nullptr; }

  // Waits for every rank, with a deadline of at least timeout_s seconds
  // (a one-off phase such as data preparation may need longer than a step).
  void barrier(double timeout_s = 0);
  // One value from every rank in rank order (null in a world of one): the
  // replica hash check's transport.
  std::function<std::vector<uint64_t>(uint64_t)> allgather_u64();
  // Ends every rank now (MPI_Abort; a plain exit in a world of one).
  [[noreturn]] void abort(int exit_code);

 private:
  // AdamWArgs::variance_keep for a rank stepping on its own gradient.
  float local_variance_keep() const {
    return cfg_.local_moment_correction ? 1.f / float(size()) : 1.f;
  }

  io::DistSection cfg_;
  std::unique_ptr<World> world_;
  std::unique_ptr<DataParallel> dp_;
  std::unique_ptr<DilocoSync> diloco_;
};

}  // namespace keel::dist
