#pragma once
// Small builders shared by the router unit tests.
#include <map>
#include <memory>
#include <string>

#include "harness/routing/router.hpp"
#include "workloads/workload.hpp"

namespace moe::testing {

// The logits of `ranks` EP ranks x `per_rank` tokens (step 0, layer 0) of a registered workload.
inline TokenBatch workload_batch(const std::string& workload, int32_t E, int64_t ranks, int64_t per_rank, uint64_t seed,
                                 const std::map<std::string, std::string>& args = {}) {
  WorkloadSetup ws;
  ws.num_experts = E;
  ws.num_layers = 1;
  ws.top_k = 2;
  ws.ep_size = static_cast<int32_t>(ranks);
  ws.tokens_per_rank = per_rank;
  ws.seq_len = 16;
  ws.seed = seed;
  TokenBatch b;
  make_workload(workload, ws, args)->generate(0, 0, 0, ranks * per_rank, b);
  return b;
}

// A registered router for one layer on a one-rank topology.
inline std::unique_ptr<Router> test_router(const std::string& name, int32_t E, int32_t k,
                                           const std::map<std::string, std::string>& args = {}) {
  RouterSetup s;
  s.num_experts = E;
  s.top_k = k;
  s.num_layers = 1;
  return make_router(name, s, args);
}

}  // namespace moe::testing
