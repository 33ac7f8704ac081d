#pragma once
#include <mpi.h>

#include <cstdint>
#include <span>
#include <string>

namespace moe {

// Thin, checked view of an MPI communicator. Every member is collective over the communicator
// unless it says otherwise.
class Comm {
 public:
  explicit Comm(MPI_Comm comm);
  static Comm world() { return Comm(MPI_COMM_WORLD); }
  static Comm self() { return Comm(MPI_COMM_SELF); }

  MPI_Comm raw() const { return comm_; }
  int rank() const { return rank_; }  // not collective
  int size() const { return size_; }  // not collective
  bool root() const { return rank_ == 0; }

  void sum(std::span<int64_t> values) const;
  void sum(std::span<double> values) const;
  int64_t sum(int64_t value) const;
  double max(double value) const;
  int64_t max(int64_t value) const;
  int64_t min(int64_t value) const;
  // Exclusive prefix sum over ranks (rank 0 gets zeros).
  void exscan_sum(std::span<int64_t> values) const;
  void barrier() const;
  void bcast(std::span<char> bytes, int root) const;

 private:
  MPI_Comm comm_;
  int rank_ = 0;
  int size_ = 1;
};

// Throws the same InputError on every rank when `path` exists (checked on rank 0) and !force:
// "--out PATH: file exists; refusing to overwrite it (pass --force to replace it)". Collective.
void refuse_to_overwrite(const std::string& option, const std::string& path, bool force, const Comm& world);

}  // namespace moe
