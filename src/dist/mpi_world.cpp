// World: MPI start-up and shutdown, and what the launcher's environment says.
#include "dist/mpi_world.h"

#include <mpi.h>

#include <cstdlib>
#include <exception>
#include <string>

#include "core/error.h"
#include "dist/mpi_communicator.h"

namespace keel::dist {

namespace {

int env_int(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  if (*end != '\0' || x < 0 || x > 1 << 24)
    fail<DistError>("environment variable {}='{}' is not a rank count", name, v);
  return int(x);
}

}  // namespace

World::World() {
  int initialized = 0;
  mpi_check(MPI_Initialized(&initialized), "initialized", -1);
  if (!initialized) {
    int provided = 0;
    mpi_check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided), "init_thread", -1);
    finalize_ = true;
    if (provided < MPI_THREAD_FUNNELED)
      fail<DistError>("[init_thread] MPI provides thread level {} < FUNNELED", provided);
  }
  comm_ = std::make_unique<MpiCommunicator>(MPI_COMM_WORLD);
}

World::~World() {
  // Unwinding from an error (often a DistError) or holding collectives that
  // never finished: MPI_Finalize could wait forever for a hung peer. Exit
  // without it; mpirun then ends the other ranks and reports the failure.
  if (std::uncaught_exceptions() > 0 || comm_->abandoned() > 0) {
    (void)comm_.release();
    return;
  }
  comm_.reset();
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalize_ && !finalized) MPI_Finalize();
}

void World::abort(int exit_code) {
  MPI_Abort(MPI_COMM_WORLD, exit_code);
  std::_Exit(exit_code);  // MPI_Abort does not return; this is for the compiler
}

bool World::launched_by_mpirun() {
  return std::getenv("OMPI_COMM_WORLD_SIZE") != nullptr || std::getenv("PMI_SIZE") != nullptr;
}

int World::env_world_size() {
  const int n = env_int("OMPI_COMM_WORLD_SIZE", env_int("PMI_SIZE", 1));
  return n < 1 ? 1 : n;
}

int World::env_world_rank() {
  return env_int("OMPI_COMM_WORLD_RANK", env_int("PMI_RANK", 0));
}

}  // namespace keel::dist
