// recorded: replays the expert choices an assignment trace recorded (workloads/TRACE_FORMAT.md).
// Each token keeps its recorded experts in their recorded order with their recorded weights; the
// harness then applies capacity, placement and traffic accounting as for any router. It refuses
// sources without recorded choices (synthetic workloads, logit traces). --top-k does not change the
// choices (the trace's are replayed whatever k is configured); like for every router it still sets
// the capacity C = ceil(CF * k * T / E) and the reference of cf_req (it defaults to the trace's k).
//
// Knobs: renormalize=false (true: weights of each token scaled to sum to 1).
#include <vector>

#include "harness/core/error.hpp"
#include "harness/routing/router.hpp"

namespace moe {
namespace {

class Recorded final : public Router {
 public:
  Recorded(const RouterSetup&, ComponentArgs& args)
      : renormalize_(args.get_bool("renormalize", false)) {}

  std::string missing_input(const TokenBatch& batch) const override {
    return batch.recorded_k > 0
               ? ""
               : "recorded expert choices (an assignment trace; this source has logits only)";
  }

  bool token_local() const override { return true; }
  bool replays_recorded() const override { return true; }

  void route(const TokenBatch& batch, const Comm&, RoutingPlan& plan) override {
    const int64_t T = batch.num_tokens;
    const int32_t k = batch.recorded_k;
    if (k <= 0) fail("recorded: the batch has no recorded choices");
    plan.reset(T, batch.num_experts, T * k);
    const int32_t* ids = batch.recorded_expert.data();
    const float* w = batch.recorded_weight.data();
    if (!renormalize_) {
      // Fixed k without padding (the common case): a straight copy.
      bool dense = true;
      for (int64_t i = 0; i < T * k && dense; ++i) dense = ids[i] >= 0;
      if (dense) {
        plan.expert.assign(ids, ids + T * k);
        plan.weight.assign(w, w + T * k);
        for (int64_t t = 0; t < T; ++t) plan.offsets[t + 1] = (t + 1) * k;
        return;
      }
    }
    for (int64_t t = 0; t < T; ++t) {
      const int32_t* e = ids + t * k;
      const float* wt = w + t * k;
      int32_t n = 0;
      float sum = 0.f;
      while (n < k && e[n] >= 0) sum += wt[n++];
      const float scale = renormalize_ && sum > 0.f ? 1.f / sum : 1.f;
      for (int32_t j = 0; j < n; ++j) {
        plan.expert.push_back(e[j]);
        plan.weight.push_back(wt[j] * scale);
      }
      plan.offsets[t + 1] = plan.offsets[t] + n;
    }
  }

 private:
  bool renormalize_;
};

const RouterRegistry::Registrar reg(
    "recorded",
    "replays an assignment trace's recorded experts and weights exactly (renormalize=false|true)",
    [](const RouterSetup& s, ComponentArgs& a) -> std::unique_ptr<Router> {
      return std::make_unique<Recorded>(s, a);
    });

}  // namespace
}  // namespace moe
