#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace moe {

// `--placement-loads file:SPEC`, SPEC = PATH[#router]: expert loads per layer, [layers][E], from
//  - a moebench results file: /runs/<router>/expert_demand summed over its completed steps (the
//    router after '#', or the file's only router);
//  - a moebench trace: assignments per expert over all its steps (logit traces: the top-k of the
//    logits, k = `top_k`).
// The file's experts and layers must match the run's. Throws InputError naming the file and
// problem.
std::vector<std::vector<double>> read_loads_file(const std::string& spec, int32_t experts,
                                                 int32_t layers, int32_t top_k);

}  // namespace moe
