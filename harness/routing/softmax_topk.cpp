// Softmax top-k (GShard / Switch / Mixtral), ROUTERS.md §1.
#include <algorithm>
#include <vector>

#include "harness/routing/router.hpp"
#include "harness/routing/topk_rows.hpp"

namespace moe {
namespace {

class SoftmaxTopK final : public Router {
 public:
  SoftmaxTopK(const RouterSetup& setup, ComponentArgs& args)
      : k_(setup.top_k), renormalize_(args.get_bool("renormalize", true)) {}

  std::string missing_input(const TokenBatch& batch) const override {
    return topk_input_check(batch, k_);
  }
  bool token_local() const override { return true; }
  // softmax over all E of the logits.
  bool has_full_distribution() const override { return true; }
  void full_scores(const TokenBatch& batch, int64_t t, float* scores) const override {
    const auto z = batch.row(t);
    std::copy(z.begin(), z.end(), scores);
  }

  void route(const TokenBatch& batch, const Comm&, RoutingPlan& plan) override {
    const int64_t T = batch.num_tokens;
    plan.reset(T, batch.num_experts, T * k_);
    plan.expert.resize(static_cast<size_t>(T) * k_);
    plan.weight.resize(static_cast<size_t>(T) * k_);
    topk_rows(batch.logits.data(), T, batch.num_experts, k_,
              renormalize_ ? TopKWeights::softmax_topk : TopKWeights::softmax_full,
              plan.expert.data(), plan.weight.data());
    for (int64_t t = 0; t < T; ++t) plan.offsets[t + 1] = (t + 1) * k_;
  }

 private:
  int32_t k_;
  bool renormalize_;
};

const RouterRegistry::Registrar reg(
    "softmax_topk",
    "softmax over all experts, top-k by logit, ties to the lower index (renormalize=true|false)",
    [](const RouterSetup& s, ComponentArgs& a) -> std::unique_ptr<Router> {
      return std::make_unique<SoftmaxTopK>(s, a);
    });

}  // namespace
}  // namespace moe
