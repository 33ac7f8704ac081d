#pragma once
#include <functional>
#include <memory>
#include <string>

#include "harness/core/args.hpp"
#include "harness/core/comm.hpp"
#include "harness/core/registry.hpp"
#include "harness/core/state_io.hpp"
#include "harness/core/types.hpp"

namespace moe {

struct RouterSetup {
  int32_t num_experts = 0;
  int32_t top_k = 0;
  int32_t num_layers = 0;
  Topology topology;
};

// A router is a function of one routing group (the tokens of one step and layer, spread over the
// EP group) plus explicit state that it updates at step boundaries.
class Router {
 public:
  virtual ~Router() = default;
  // Collective over `group` for routers that need global facts; purely local for causal ones.
  // Fills `plan` with each token's experts in priority order.
  virtual void route(const TokenBatch& batch, const Comm& group, RoutingPlan& plan) = 0;
  // Called once after every layer of a step was routed (state updates such as a bias).
  virtual void end_step(const Comm& /*group*/) {}
  // The group-wide per-expert load kept by the capacity stage after this router's last route of
  // `layer` (identical on every process). Routers whose state follows the tokens actually
  // processed (deepseek_v3 with bias_counts=kept, as Megatron-Core counts) use it.
  virtual void observe_kept(int32_t /*layer*/, const std::vector<int64_t>& /*expert_load*/) {}

  // Router-specific figures of the last route() call, global over the group and identical on every
  // process, written per step and layer to /runs/<router>/figures/<name>. The names are fixed for
  // the router's lifetime; values come in the same order.
  virtual std::vector<std::string> figure_names() const { return {}; }
  virtual std::vector<double> figures() const { return {}; }

  // The router's full distribution over all E experts for token t of the last route()d batch:
  // writes scores[E] whose softmax is that distribution (the scores it ranks experts by). The
  // transition figures of labelled sources (metrics.hpp) use it for p_correct and coverage@K;
  // routers without one (has_full_distribution() false, fixed for the router's lifetime) get the
  // among-chosen figures, named so.
  virtual bool has_full_distribution() const { return false; }
  virtual void full_scores(const TokenBatch& /*batch*/, int64_t /*t*/, float* /*scores*/) const {}

  // true for the router that replays recorded choices (`recorded`): the only one that runs on a
  // count-only trace, whose tokens carry no logits and no choice of their own (batch.count_only).
  virtual bool replays_recorded() const { return false; }

  // "" when the router can route this batch; otherwise what the source lacks, e.g.
  // "full router logits (the trace has top-k assignments only)". Checked once before the run.
  virtual std::string missing_input(const TokenBatch& /*batch*/) const { return ""; }

  // true when route() of a batch equals the concatenation of route() over any split of its tokens,
  // with no collective and no figures: the driver may then generate and route a large batch in
  // chunks of ranks, so that its logits never sit in memory at once.
  virtual bool token_local() const { return false; }

  // Chunked routing of a large batch: the driver calls begin_chunks once, route_chunk for
  // consecutive chunks of whole EP ranks (no collective may happen there), then finish_chunks
  // (collective: group-wide figures and state). The result must equal route() on the whole batch.
  // Token-local routers get it for free; others (deepseek_v3) implement the three parts.
  virtual bool chunkable() const { return token_local(); }
  virtual void begin_chunks(int32_t /*layer*/, int32_t /*first_rank*/, int32_t /*ranks*/) {}
  virtual void route_chunk(const TokenBatch& chunk, RoutingPlan& plan) {
    route(chunk, Comm::self(), plan);
  }
  virtual void finish_chunks(const Comm& /*group*/) {}

  // --resume: the state carried from step to step (what end_step() updates), appended to `out`
  // after every step's end_step() and read back, in the same order, by a freshly built router
  // before the first resumed step. Per process (a router may keep process-local state). Routers
  // that keep nothing across steps leave both empty.
  virtual void save_state(StateWriter& /*out*/) const {}
  virtual void load_state(StateReader& /*in*/) {}
};

// For routers that pick the top k by a score monotone in the logit (softmax_topk, sigmoid_topk): on
// reconstructed logits (an assignment trace) their top k are the recorded experts as long as k does
// not exceed the recorded k; beyond it the choice would fall among experts the trace does not know.
inline std::string topk_input_check(const TokenBatch& batch, int32_t k) {
  if (batch.full_logits) return "";
  if (batch.recorded_variable_k)
    return "full router logits (the trace records fewer than " + std::to_string(batch.recorded_k) +
           " experts for some tokens, and the top-k would fill them with experts it never "
           "recorded; the recorded router replays it)";
  if (k <= batch.recorded_k) return "";
  return "full router logits for k = " + std::to_string(k) + " (the trace recorded " +
         std::to_string(batch.recorded_k) +
         " experts per token; use --top-k <= " + std::to_string(batch.recorded_k) + ")";
}

using RouterFactory = std::function<std::unique_ptr<Router>(const RouterSetup&, ComponentArgs&)>;
using RouterRegistry = Registry<RouterFactory>;

// A router instance in --routers is NAME or NAME@label (the same router twice with different
// knobs: `beta,beta@ahead --router-arg beta@ahead.lookahead=true`). Its results group and its
// --router-arg prefix are the whole instance name; the registry name is the part before '@'.
std::string router_registry_name(const std::string& instance);

// Builds a registered router instance and rejects knobs it does not know. Throws InputError.
std::unique_ptr<Router> make_router(const std::string& instance, const RouterSetup& setup,
                                    const std::map<std::string, std::string>& args);

}  // namespace moe
