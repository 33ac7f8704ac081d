#pragma once
#include <string>

#include "harness/core/comm.hpp"
#include "harness/core/types.hpp"

namespace moe {

// Which assignments an expert keeps when more than C tokens want it.
//  choice_first: each expert's first C assignments in (priority, global token) order, so every
//  first
//                choice beats every second choice (GShard; Switch/Mesh-TensorFlow). `position` is
//                an older name for it, still accepted.
//  token_order:  each expert's first C assignments in global token order, whatever their choice
//  rank
//                (Megatron-Core's drop_policy="position": topk over the 0/1 routing map per
//                expert).
//  probability:  each expert's C assignments of highest weight; equal weights go to the lower
//  global
//                token index (Megatron-Core's drop_policy="probs").
enum class DropPolicy { choice_first, token_order, probability };
// Accepts the names above and `position` (= choice_first); throws InputError naming `option`.
DropPolicy parse_drop_policy(const std::string& name, const std::string& option = "--drop-policy");
const char* drop_policy_name(DropPolicy p);

// How C = ceil(CF * k * T / E) is rounded.
//  exact:     the exact product of the decimal CF (computed in double, a relative 1e-9 below a
//  whole
//             number counts as that number), so CF = 1.1, T k / E = 400 gives C = 440.
//  framework: Megatron-Core's get_capacity, ceil((T * k / E) * CF) in double arithmetic, which
//  rounds
//             up once more when CF is not exactly representable and the exact product is whole
//             (CF = 1.1, T k / E = 400: 440.00000000000006, so C = 441).
enum class CapacityRounding { exact, framework };
CapacityRounding parse_capacity_rounding(const std::string& name);

struct CapacitySpec {
  double capacity_factor = 0;           // 0: unlimited
  int32_t top_k = 1;                    // nominal k of the formula
  std::string policy = "choice_first";  // a DropPolicy name
  CapacityRounding rounding = CapacityRounding::exact;
};

// C = ceil(CF * k * T / E) for T tokens in the capacity group, at least 1; 0 when CF == 0
// (unlimited).
int64_t expert_capacity(double capacity_factor, int32_t top_k, int64_t group_tokens,
                        int32_t num_experts, CapacityRounding rounding = CapacityRounding::exact);

// Decides which assignments of `plan` survive capacity C over the group `group` (collective). The
// processes of the group hold consecutive global token ranges in rank order. Global figures
// (demand, load, drops) in `out`.
void apply_capacity(const RoutingPlan& plan, const CapacitySpec& spec, int64_t group_tokens,
                    const Comm& group, CapacityResult& out);

// Capacity per EP rank (Megatron-Core drops on each rank's own tokens): the tokens of each EP rank
// hosted here, [layout.rank_begin(i), layout.rank_end(i)), form their own group with
// C_i = capacity(T_i). No collective: demand, load and drops in `out` are this process's; the
// caller sums them over the processes. out.capacity is the largest C_i here.
void apply_capacity_per_rank(const RoutingPlan& plan, const CapacitySpec& spec,
                             const TokenBatch& layout, CapacityResult& out);

}  // namespace moe
