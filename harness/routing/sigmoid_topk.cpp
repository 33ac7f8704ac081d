// Sigmoid top-k without bias or group limit (the selection part of ROUTERS.md §2).
#include <cmath>

#include "harness/routing/router.hpp"
#include "harness/routing/topk_rows.hpp"

namespace moe {
namespace {

class SigmoidTopK final : public Router {
 public:
  SigmoidTopK(const RouterSetup& setup, ComponentArgs& args)
      : k_(setup.top_k),
        renormalize_(args.get_bool("renormalize", true)),
        scale_(static_cast<float>(args.get_double("scaling_factor", 1.0))) {}

  std::string missing_input(const TokenBatch& batch) const override { return topk_input_check(batch, k_); }
  bool token_local() const override { return true; }

  void route(const TokenBatch& batch, const Comm&, RoutingPlan& plan) override {
    const int64_t T = batch.num_tokens;
    plan.reset(T, batch.num_experts, T * k_);
    plan.expert.resize(static_cast<size_t>(T) * k_);
    plan.weight.resize(static_cast<size_t>(T) * k_);
    // sigmoid is monotone: the top-k of the scores is the top-k of the logits.
    topk_rows(batch.logits.data(), T, batch.num_experts, k_, TopKWeights::logits, plan.expert.data(), plan.weight.data());
    for (int64_t t = 0; t < T; ++t) {
      float* w = plan.weight.data() + t * k_;
      float norm = 0.f;
      for (int32_t j = 0; j < k_; ++j) {
        w[j] = 1.0f / (1.0f + std::exp(-w[j]));
        norm += w[j];
      }
      const float f = renormalize_ ? scale_ / norm : scale_;
      for (int32_t j = 0; j < k_; ++j) w[j] *= f;
      plan.offsets[t + 1] = (t + 1) * k_;
    }
  }

 private:
  int32_t k_;
  bool renormalize_;
  float scale_;
};

const RouterRegistry::Registrar reg(
    "sigmoid_topk", "sigmoid scores, top-k, weights renormalised over the k (renormalize, scaling_factor)",
    [](const RouterSetup& s, ComponentArgs& a) -> std::unique_ptr<Router> { return std::make_unique<SigmoidTopK>(s, a); });

}  // namespace
}  // namespace moe
