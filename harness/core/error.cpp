#include "harness/core/error.hpp"

#include <mpi.h>

#include <string>

namespace moe {

namespace {
std::string location(const std::source_location& where) {
  int initialized = 0;
  int finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  int rank = -1;
  if (initialized && !finalized) MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return "rank " + std::to_string(rank) + " at " + where.file_name() + ":" + std::to_string(where.line());
}
}  // namespace

Error::Error(const std::string& what, std::source_location where)
    : std::runtime_error(what), where_(location(where)) {}

void fail(const std::string& what, std::source_location where) { throw Error(what, where); }

void check_mpi(int rc, const char* call, std::source_location where) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  throw Error(std::string("MPI call failed: ") + call + ": " + std::string(text, static_cast<size_t>(len)), where);
}

}  // namespace moe
