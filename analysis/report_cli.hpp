#pragma once
#include <map>
#include <string>
#include <vector>

#include "analysis/results_reader.hpp"
#include "harness/core/comm.hpp"

namespace moe {

// `moebench report FILE... [--format text|md|csv|json] [--baseline ROUTER] [--per-layer]
// [--per-step]
// [--compare [--vary DIM]] [--claims]`, argv[0] = "report". Reads the files alone; rank 0 prints.
// Returns 0, or 3 when a file is partial (the report then covers its completed steps).
int report_command(int argc, const char* const* argv, const Comm& world);

// The pieces below are exposed for the tests.

// A JSON object flattened to "a.b.c" -> value text (strings unquoted, arrays as their JSON text).
// Throws InputError (naming `what`) on malformed JSON.
std::map<std::string, std::string> flatten_json(const std::string& json, const std::string& what);

// The dimension a configuration key belongs to when runs are compared: cluster, placement,
// workload, capacity, dedup, shape, routers; any other key is its own dimension.
std::string config_dimension(const std::string& key);

struct ConfigDifference {
  std::string key, dimension;
  std::vector<std::string> values;  // one per file ("(absent)" where a file lacks the key)
};
std::vector<ConfigDifference> config_differences(
    const std::vector<std::map<std::string, std::string>>& configs);

struct ReportOptions {
  std::string format = "text";  // text | md | csv | json
  std::string baseline;         // router for the delta columns ("" = none)
  bool per_layer = false, per_step = false, claims = false, compare = false;
  std::string vary;  // --compare: the compared dimension(s), comma-separated ("" = inferred)
  int64_t warmup_steps = 0;  // leave out the first N steps of every file
};

// The report of one file, or of several with options.compare, in options.format.
std::string format_results_report(const std::vector<ResultsFile>& files,
                                  const ReportOptions& options);

}  // namespace moe
