// World: this process's place in an MPI job (started by mpirun) and the
// communicator over all of its ranks. Ranks call MPI from one thread only.
#pragma once
#include <memory>

#include "dist/communicator.h"

namespace keel::dist {

class World {
 public:
  // Initialises MPI (thread level FUNNELED: OpenMP threads may exist, only
  // the main thread calls MPI) unless it already is, and builds the
  // communicator over every rank. Finalises MPI on destruction if it
  // initialised it, unless it is destroyed by an exception unwinding or with
  // collectives left unfinished (then the process exits unfinalised and
  // mpirun tears the job down). DistError if MPI cannot start.
  World();
  ~World();
  World(const World&) = delete;
  World& operator=(const World&) = delete;

  int rank() const { return comm_->rank(); }
  int size() const { return comm_->size(); }
  Communicator& comm() { return *comm_; }

  // Ends every rank of the job now (after a DistError nothing else is safe).
  [[noreturn]] void abort(int exit_code);

  // True when this process was started by mpirun (OpenMPI's or a PMI launcher's
  // environment is present).
  static bool launched_by_mpirun();
  // The world size the launcher announced (OMPI_COMM_WORLD_SIZE, PMI_SIZE), 1 if none.
  static int env_world_size();
  // This process's rank as the launcher announced it, 0 if none.
  static int env_world_rank();

 private:
  bool finalize_ = false;
  std::unique_ptr<Communicator> comm_;
};

}  // namespace keel::dist
