// Sigmoid top-k without bias or group limit (the selection part of ROUTERS.md §2).
#include <cmath>
#include <vector>

#include "harness/routing/router.hpp"
#include "harness/routing/topk.hpp"

namespace moe {
namespace {

class SigmoidTopK final : public Router {
 public:
  SigmoidTopK(const RouterSetup& setup, ComponentArgs& args)
      : k_(setup.top_k),
        renormalize_(args.get_bool("renormalize", true)),
        scale_(static_cast<float>(args.get_double("scaling_factor", 1.0))) {}

  void route(const TokenBatch& batch, const Comm&, RoutingPlan& plan) override {
    const int32_t E = batch.num_experts;
    plan.reset(batch.num_tokens, E, batch.num_tokens * k_);
    plan.expert.resize(static_cast<size_t>(batch.num_tokens) * k_);
    plan.weight.resize(static_cast<size_t>(batch.num_tokens) * k_);
    float* val = val_.data();
    for (int64_t t = 0; t < batch.num_tokens; ++t) {
      int32_t* idx = plan.expert.data() + t * k_;
      float* w = plan.weight.data() + t * k_;
      // sigmoid is monotone: the top-k of the scores is the top-k of the logits.
      topk_indices(batch.logits.data() + t * E, E, k_, idx, val);
      float norm = 0.f;
      for (int32_t j = 0; j < k_; ++j) {
        w[j] = 1.0f / (1.0f + std::exp(-val[j]));
        norm += w[j];
      }
      const float f = renormalize_ ? scale_ / norm : scale_;
      for (int32_t j = 0; j < k_; ++j) w[j] *= f;
      plan.offsets[t + 1] = (t + 1) * k_;
    }
  }

 private:
  int32_t k_;
  std::vector<float> val_ = std::vector<float>(static_cast<size_t>(k_));
  bool renormalize_;
  float scale_;
};

const RouterRegistry::Registrar reg(
    "sigmoid_topk", "sigmoid scores, top-k, weights renormalised over the k (renormalize, scaling_factor)",
    [](const RouterSetup& s, ComponentArgs& a) -> std::unique_ptr<Router> { return std::make_unique<SigmoidTopK>(s, a); });

}  // namespace
}  // namespace moe
