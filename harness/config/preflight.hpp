#pragma once
// Preflight (before any large allocation): the peak memory of one process and the size of the
// results file, estimated from the configuration alone, against the memory and disk the run has.
// A run that would not fit is refused with one line giving the estimate and what to change.
#include <cstdint>
#include <string>

#include "harness/config/run_config.hpp"
#include "harness/core/comm.hpp"

namespace moe {

struct PreflightLimits {
  double memory_bytes = 0;      // per process; <= 0: no check
  std::string memory_source;    // where the limit came from (for the message)
  double disk_free_bytes = -1;  // free bytes where --out goes; < 0: no check (no --out)
};

// Parses --max-memory: BYTES with an optional K/M/G/T suffix (powers of 1024), "auto" or "0" (off).
// Throws InputError naming the option and value.
double parse_memory_size(const std::string& option, const std::string& value);

// Collective over `world`: the memory limit per process (--max-memory, else the node's available
// memory shared by the processes on the node; the smallest over the nodes) and the free disk
// space of --out's folder (on rank 0). Identical on every rank.
PreflightLimits preflight_limits(const RunConfig& cfg, const Comm& world);

struct MemoryEstimate {
  double total = 0;
  double logits = 0, router_scratch = 0, plans = 0, state = 0, matrices = 0;
  bool chunked = false;
};
// Peak bytes per process of `cfg` (resolved EP shape) on `world_size` processes. Deterministic.
MemoryEstimate estimate_memory(const RunConfig& cfg, int world_size);
double estimate_results_bytes(const RunConfig& cfg);  // the results file, all steps

// "" when the run fits; otherwise the one-line problem.
std::string preflight_check(const RunConfig& cfg, int world_size, const PreflightLimits& limits);

// Routers whose instances route in chunks (Router::chunkable()); tests check the list.
bool router_chunkable_by_name(const std::string& registry_name);

std::string human_bytes(double bytes);

}  // namespace moe
