// Softmax top-k (GShard / Switch / Mixtral), ROUTERS.md §1.
#include <vector>

#include "harness/routing/router.hpp"
#include "harness/routing/topk.hpp"

namespace moe {
namespace {

class SoftmaxTopK final : public Router {
 public:
  SoftmaxTopK(const RouterSetup& setup, ComponentArgs& args)
      : k_(setup.top_k),
        renormalize_(args.get_bool("renormalize", true)),
        scratch_(static_cast<size_t>(setup.num_experts)) {}

  void route(const TokenBatch& batch, const Comm&, RoutingPlan& plan) override {
    const int32_t E = batch.num_experts;
    plan.reset(batch.num_tokens, E, batch.num_tokens * k_);
    plan.expert.resize(static_cast<size_t>(batch.num_tokens) * k_);
    plan.weight.resize(static_cast<size_t>(batch.num_tokens) * k_);
    float* val = val_.data();
    for (int64_t t = 0; t < batch.num_tokens; ++t) {
      const float* z = batch.logits.data() + t * E;
      int32_t* idx = plan.expert.data() + t * k_;
      float* w = plan.weight.data() + t * k_;
      topk_indices(z, E, k_, idx, val);
      // The top logit is the row maximum, so every shifted exponent is <= 0.
      float norm = 0.f;
      for (int32_t j = 0; j < k_; ++j) {
        w[j] = exp_nonpositive(val[j] - val[0]);
        norm += w[j];
      }
      if (!renormalize_) norm = sum_exp_shifted(z, E, val[0], scratch_.data());
      const float inv = 1.0f / norm;
      for (int32_t j = 0; j < k_; ++j) w[j] *= inv;
      plan.offsets[t + 1] = (t + 1) * k_;
    }
  }

 private:
  int32_t k_;
  std::vector<float> val_ = std::vector<float>(static_cast<size_t>(k_));
  bool renormalize_;
  std::vector<float> scratch_;
};

const RouterRegistry::Registrar reg(
    "softmax_topk", "softmax over all experts, top-k by logit, ties to the lower index (renormalize=true|false)",
    [](const RouterSetup& s, ComponentArgs& a) -> std::unique_ptr<Router> { return std::make_unique<SoftmaxTopK>(s, a); });

}  // namespace
}  // namespace moe
