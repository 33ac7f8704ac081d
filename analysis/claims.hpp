#pragma once
#include <string>

#include "analysis/results_reader.hpp"

namespace moe {

// `moebench report FILE --claims`: for every seed claim a replay can test, the claim, the figure
// this file measured and the workload it was measured on; claims a replay cannot test say so.
// Reads the file alone (the router instances, their figures and the per-step datasets).
std::string format_claims(const ResultsFile& file);

}  // namespace moe
