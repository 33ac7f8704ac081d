#pragma once
#include <string>
#include <vector>

#include "analysis/results_reader.hpp"

namespace moe {

// `moebench report FILE --claims`: for every seed claim a replay can test, the claim, the figure
// this file measured and the workload it was measured on; claims a replay cannot test say so.
// Reads the file alone (the router instances, their figures and the per-step datasets).
std::string format_claims(const ResultsFile& file);

// One claim's conclusion in a file: the headline figure and whether the claim holds by it.
struct ClaimVerdict {
  std::string claim, router, figure;
  double value = 0;
  bool holds = false;
};
std::vector<ClaimVerdict> claim_verdicts(const ResultsFile& file);

// `report --claims` over runs of one trace completed under two or more tail models (--trace-tail):
// each claim marked robust (the same conclusion under every model) or tail-sensitive; "" when
// fewer than two tail models are among the files.
std::string format_tail_sensitivity(const std::vector<ResultsFile>& files);

}  // namespace moe
