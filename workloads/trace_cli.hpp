#pragma once
#include <cstdint>
#include <vector>

#include "harness/core/comm.hpp"

namespace moe {

class TraceReader;

// Assignments per expert of each trace layer over all steps, [layers][E]: the recorded ids of an
// assignment trace (padding skipped), the top k of each token's logits for a logit trace. Streams
// the trace in blocks of tokens.
std::vector<std::vector<int64_t>> trace_expert_loads(TraceReader& reader, int32_t k);

// `moebench trace convert|gen|info ...` (argv[0] == "trace"). Runs on rank 0 only. Returns the exit
// code.
int trace_command(int argc, char** argv, const Comm& world);

}  // namespace moe
