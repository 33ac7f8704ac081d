#pragma once
#include <source_location>
#include <stdexcept>
#include <string>

namespace moe {

// Every failure the harness reports is one of these: a one-line message that already names the
// file / field / value at fault, plus where it was raised (rank and source location) for debugging.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what, std::source_location where = std::source_location::current());
  const std::string& where() const { return where_; }

 private:
  std::string where_;
};

// Bad user input (config, file contents): exit code 2 instead of 1.
class InputError : public Error {
 public:
  using Error::Error;
};

// Raised identically on every rank, from data all ranks share (e.g. allgathered integrity
// counts): unwinding is safe, since every rank takes part in the same collective destructors.
class CollectiveError : public Error {
 public:
  using Error::Error;
};

[[noreturn]] void fail(const std::string& what, std::source_location where = std::source_location::current());

// Checked wrapper for MPI return codes (MPI_ERRORS_RETURN is set on the communicators we use).
void check_mpi(int rc, const char* call, std::source_location where = std::source_location::current());

}  // namespace moe

#define MOE_MPI(call) ::moe::check_mpi((call), #call)
