#pragma once
#include <functional>
#include <memory>
#include <string>

#include "harness/core/args.hpp"
#include "harness/core/registry.hpp"
#include "harness/core/types.hpp"

namespace moe {

struct WorkloadSetup {
  int32_t num_experts = 0;
  int32_t num_layers = 0;
  int32_t top_k = 0;
  int32_t ep_size = 1;
  int64_t tokens_per_rank = 0;
  int64_t seq_len = 1;
  uint64_t seed = 0;
};

// Makes the router logits of global tokens [first_token, first_token + num_tokens) for one step and
// layer. Every value is drawn from the counter-based RNG keyed by (seed, step, layer, global token
// index), so any split of the tokens over processes gives identical logits. Not collective.
class Workload {
 public:
  explicit Workload(const WorkloadSetup& setup) : setup_(setup) {}
  virtual ~Workload() = default;
  void generate(int32_t step, int32_t layer, int64_t first_token, int64_t num_tokens, TokenBatch& out);

 protected:
  // Fills out.logits; metadata (sequence, position, counts) is already set.
  virtual void fill_logits(TokenBatch& out) = 0;
  WorkloadSetup setup_;
};

using WorkloadFactory = std::function<std::unique_ptr<Workload>(const WorkloadSetup&, ComponentArgs&)>;
using WorkloadRegistry = Registry<WorkloadFactory>;

// Builds a registered workload and rejects knobs it does not know. Throws InputError.
std::unique_ptr<Workload> make_workload(const std::string& name, const WorkloadSetup& setup,
                                        const std::map<std::string, std::string>& args);

}  // namespace moe
