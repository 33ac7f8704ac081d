#include "harness/core/comm.hpp"

#include <algorithm>
#include <filesystem>
#include <vector>

#include "harness/core/error.hpp"

namespace moe {

Comm::Comm(MPI_Comm comm) : comm_(comm) {
  MOE_MPI(MPI_Comm_rank(comm_, &rank_));
  MOE_MPI(MPI_Comm_size(comm_, &size_));
}

void Comm::sum(std::span<int64_t> values) const {
  if (size_ == 1 || values.empty()) return;
  MOE_MPI(MPI_Allreduce(MPI_IN_PLACE, values.data(), static_cast<int>(values.size()), MPI_INT64_T, MPI_SUM, comm_));
}
void Comm::sum(std::span<double> values) const {
  if (size_ == 1 || values.empty()) return;
  MOE_MPI(MPI_Allreduce(MPI_IN_PLACE, values.data(), static_cast<int>(values.size()), MPI_DOUBLE, MPI_SUM, comm_));
}
int64_t Comm::sum(int64_t value) const {
  sum(std::span<int64_t>(&value, 1));
  return value;
}
double Comm::max(double value) const {
  if (size_ > 1) MOE_MPI(MPI_Allreduce(MPI_IN_PLACE, &value, 1, MPI_DOUBLE, MPI_MAX, comm_));
  return value;
}
int64_t Comm::max(int64_t value) const {
  if (size_ > 1) MOE_MPI(MPI_Allreduce(MPI_IN_PLACE, &value, 1, MPI_INT64_T, MPI_MAX, comm_));
  return value;
}
int64_t Comm::min(int64_t value) const {
  if (size_ > 1) MOE_MPI(MPI_Allreduce(MPI_IN_PLACE, &value, 1, MPI_INT64_T, MPI_MIN, comm_));
  return value;
}
void Comm::exscan_sum(std::span<int64_t> values) const {
  if (values.empty()) return;
  if (size_ == 1) {
    std::fill(values.begin(), values.end(), 0);
    return;
  }
  std::vector<int64_t> in(values.begin(), values.end());
  MOE_MPI(MPI_Exscan(in.data(), values.data(), static_cast<int>(values.size()), MPI_INT64_T, MPI_SUM, comm_));
  if (rank_ == 0) std::fill(values.begin(), values.end(), 0);  // MPI leaves rank 0's buffer undefined
}
void Comm::barrier() const { MOE_MPI(MPI_Barrier(comm_)); }
void Comm::bcast(std::span<char> bytes, int root) const {
  if (size_ > 1) MOE_MPI(MPI_Bcast(bytes.data(), static_cast<int>(bytes.size()), MPI_CHAR, root, comm_));
}

void refuse_to_overwrite(const std::string& option, const std::string& path, bool force, const Comm& world) {
  char exists = world.root() && !path.empty() && std::filesystem::exists(path) ? 1 : 0;
  world.bcast(std::span<char>(&exists, 1), 0);
  if (exists && !force) throw InputError(option + " " + path + ": file exists; refusing to overwrite it (pass --force to replace it)");
}

}  // namespace moe
