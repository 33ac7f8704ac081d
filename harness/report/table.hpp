#pragma once
#include <string>
#include <vector>

#include "harness/metrics/metrics.hpp"

namespace moe {

// The per-router comparison table (console and `moebench report`).
std::string format_summary_table(const std::vector<RouterSummary>& rows);

}  // namespace moe
