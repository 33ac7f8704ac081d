#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "harness/core/comm.hpp"

namespace moe {

// `moebench export matrix|placement RESULTS.h5 ...` (argv[0] = "export"). Rank 0 reads and writes;
// errors name the file, dataset or option (InputError, exit 2, no output file left behind).
int export_command(int argc, const char* const* argv, const Comm& world);

// The pieces below are exposed for the tests.

// [R x R] dispatch matrix (what: "bytes" or "tokens") of router, step, layer; ranks = R. An empty
// router picks the file's only one.
std::vector<int64_t> read_dispatch_matrix(const std::string& path, const std::string& router,
                                          int64_t step, int64_t layer, const std::string& what,
                                          int64_t& ranks, std::string* router_out = nullptr);
// One row per sender, values separated by ' ' (txt) or ',' (csv), no header.
std::string format_matrix(const std::vector<int64_t>& matrix, int64_t ranks,
                          const std::string& format);

struct ExportedPlacement {
  std::string router;
  int64_t step = 0, experts = 0, ep_size = 0, slots_per_rank = 0;
  std::vector<std::vector<int64_t>> physical_to_logical;  // [layers][R x slots], -1 = empty slot
};
// The placement of every layer at `step` (< 0: the last completed step).
ExportedPlacement read_placement(const std::string& path, const std::string& router, int64_t step);
// sglang: {"physical_to_logical_map": [[...], ...]} (refuses empty slots); json: the same with
// moebench's metadata.
std::string format_placement(const ExportedPlacement& placement, const std::string& format,
                             const std::string& source);

}  // namespace moe
