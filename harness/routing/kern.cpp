// KERN (Zheng et al., arXiv 2509.25913), ROUTERS.md §3: ReLU of the l2-normalised logits.
//
// Per token (logits z over all E experts):
//   order=normalize_first (default, the [pick] of §3, the paper's Eq. 3):
//       r = gamma * ReLU( z / max(||z||_2, eps) )
//   order=activate_first (the alternative reading, Eq. 4):
//       r = gamma * ReLU(z) / max(||ReLU(z)||_2, eps)
//   Selection: the k largest r, best first, ties to the lower index. Weights: r of the selected
//   experts, no renormalisation. Both readings are a positive rescale of ReLU(z), so the selection is
//   the same: the positive logits in decreasing z order (ties to the lower index, exactly softmax
//   top-k's order when >= k logits are positive), then, for a token with p < k positive logits, the
//   k - p lowest-index experts with z <= 0 (all their r are 0: a tie, broken to the lower index).
//   The order is taken from z, which is the exact order of r (float rounding of z / ||z|| could
//   merge neighbouring values that the exact r keeps apart). ||z|| is accumulated in double and
//   r_i = gamma * z_i / max(||z||, eps) is computed in double, then rounded to float.
//
// Knobs:
//   gamma      > 0, default 1 (a learned scalar in the paper; it scales the weights, not the traffic)
//   eps        > 0, default 1e-6
//   order      normalize_first (default) | activate_first
//   skip_zero  default false. true: assignments whose weight is 0 are dropped before capacity (a
//              variable number of experts per token, 0..k; fewer sends). A weight is 0 exactly when
//              the expert's logit is <= 0 (or, in float, when gamma * z_i / ||z|| underflows).
//
// Figures (per step and layer, identical on every process; integer counts summed over the group):
//   free_sparsity            fraction of tokens with fewer than k positive logits
//   zero_weight_assignments  mean number of zero-weight picks per token, counted before skip_zero
//
// Needs full logits. Causal (no state, no global facts); the figures are one Comm::sum of 3 int64.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "harness/core/error.hpp"
#include "harness/routing/router.hpp"
#include "harness/routing/topk_rows.hpp"

namespace moe {
namespace {

// For n rows of z ([n, E]): ss[t] = sum of z^2 (positive entries only when positive_only), in
// double with eight partial sums in a fixed order; pos[t] = number of entries > 0.
__attribute__((target_clones("arch=x86-64-v4", "avx2", "default"))) void row_norms(const float* z, int64_t n, int32_t E,
                                                                             bool positive_only, double* ss, int32_t* pos) {
  for (int64_t t = 0; t < n; ++t) {
    const float* r = z + t * E;
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int32_t cnt[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int32_t e = 0;
    if (positive_only) {
      for (; e + 8 <= E; e += 8)
        for (int j = 0; j < 8; ++j) {
          const float x = r[e + j];
          const double d = x > 0.0f ? static_cast<double>(x) : 0.0;
          acc[j] += d * d;
          cnt[j] += x > 0.0f ? 1 : 0;
        }
    } else {
      for (; e + 8 <= E; e += 8)
        for (int j = 0; j < 8; ++j) {
          const float x = r[e + j];
          const double d = static_cast<double>(x);
          acc[j] += d * d;
          cnt[j] += x > 0.0f ? 1 : 0;
        }
    }
    double s = 0;
    int32_t c = 0;
    for (; e < E; ++e) {
      const float x = r[e];
      const double d = (positive_only && !(x > 0.0f)) ? 0.0 : static_cast<double>(x);
      s += d * d;
      c += x > 0.0f ? 1 : 0;
    }
    for (int j = 0; j < 8; ++j) {
      s += acc[j];
      c += cnt[j];
    }
    ss[t] = s;
    pos[t] = c;
  }
}

class Kern final : public Router {
 public:
  Kern(const RouterSetup& setup, ComponentArgs& args) : E_(setup.num_experts), k_(setup.top_k) {
    if (E_ < 1 || k_ < 1 || k_ > E_)
      throw InputError("router kern: needs 1 <= top_k <= experts (got k=" + std::to_string(k_) + ", E=" + std::to_string(E_) + ")");
    gamma_ = args.get_double("gamma", 1.0);
    if (!(gamma_ > 0)) throw InputError("router-arg kern.gamma: must be > 0 (got " + std::to_string(gamma_) + ")");
    eps_ = args.get_double("eps", 1e-6);
    if (!(eps_ > 0)) throw InputError("router-arg kern.eps: must be > 0 (got " + std::to_string(eps_) + ")");
    const std::string order = args.get_string("order", "normalize_first");
    if (order == "normalize_first") {
      activate_first_ = false;
    } else if (order == "activate_first") {
      activate_first_ = true;
    } else {
      throw InputError("router-arg kern.order: '" + order + "' is not normalize_first or activate_first");
    }
    skip_zero_ = args.get_bool("skip_zero", false);
  }

  std::string missing_input(const TokenBatch& batch) const override {
    return batch.full_logits ? "" : "full router logits (the source has top-k assignments only)";
  }

  std::vector<std::string> figure_names() const override { return {"free_sparsity", "zero_weight_assignments"}; }
  std::vector<double> figures() const override { return figures_; }

  void route(const TokenBatch& batch, const Comm& group, RoutingPlan& plan) override {
    if (batch.num_experts != E_)
      throw Error("router kern: batch has " + std::to_string(batch.num_experts) + " experts, router set up for " + std::to_string(E_));
    const int64_t T = batch.num_tokens;
    const int32_t E = E_, k = k_;
    plan.reset(T, E, T * k);
    plan.expert.resize(static_cast<size_t>(T) * k);
    plan.weight.resize(static_cast<size_t>(T) * k);
    const int64_t chunk = std::max<int64_t>(8, (16384 / E) / 8 * 8);  // 64 KiB of logits per chunk
    ss_.resize(static_cast<size_t>(chunk));
    pos_.resize(static_cast<size_t>(chunk));
    int64_t free_tokens = 0, zero_picks = 0;
    for (int64_t t0 = 0; t0 < T; t0 += chunk) {
      const int64_t n = std::min(chunk, T - t0);
      const float* z = batch.logits.data() + t0 * E;
      int32_t* sel = plan.expert.data() + t0 * k;
      float* w = plan.weight.data() + t0 * k;  // the selected logits first, the weights below
      topk_rows(z, n, E, k, TopKWeights::logits, sel, w);
      row_norms(z, n, E, activate_first_, ss_.data(), pos_.data());
      for (int64_t t = 0; t < n; ++t) {
        const double inv = gamma_ / std::max(std::sqrt(ss_[t]), eps_);
        int32_t* e_t = sel + t * k;
        float* w_t = w + t * k;
        const int32_t p = pos_[t];
        const int32_t positive = std::min(p, k);
        for (int32_t j = 0; j < positive; ++j) w_t[j] = static_cast<float>(static_cast<double>(w_t[j]) * inv);
        if (p < k) {
          // The top p by z are the positive logits; the other picks are the lowest-index experts
          // with z <= 0, all of weight 0.
          ++free_tokens;
          const float* zr = z + t * E;
          int32_t j = positive;
          for (int32_t e = 0; e < E && j < k; ++e)
            if (!(zr[e] > 0.0f)) {
              e_t[j] = e;
              w_t[j] = 0.0f;
              ++j;
            }
        }
        for (int32_t j = 0; j < k; ++j) zero_picks += w_t[j] == 0.0f ? 1 : 0;
      }
    }
    if (skip_zero_) {
      int64_t out = 0;
      for (int64_t t = 0; t < T; ++t) {
        plan.offsets[t] = out;
        for (int64_t a = t * k; a < (t + 1) * k; ++a)
          if (plan.weight[a] != 0.0f) {
            plan.expert[out] = plan.expert[a];
            plan.weight[out] = plan.weight[a];
            ++out;
          }
      }
      plan.offsets[T] = out;
      plan.expert.resize(static_cast<size_t>(out));
      plan.weight.resize(static_cast<size_t>(out));
    } else {
      for (int64_t t = 0; t < T; ++t) plan.offsets[t + 1] = (t + 1) * k;
    }
    int64_t counts[3] = {free_tokens, zero_picks, T};
    group.sum(counts);
    const double tokens = static_cast<double>(counts[2]);
    figures_ = {tokens > 0 ? static_cast<double>(counts[0]) / tokens : 0.0, tokens > 0 ? static_cast<double>(counts[1]) / tokens : 0.0};
  }

 private:
  int32_t E_, k_;
  double gamma_ = 1.0, eps_ = 1e-6;
  bool activate_first_ = false, skip_zero_ = false;
  std::vector<double> figures_ = {0, 0};
  std::vector<double> ss_;
  std::vector<int32_t> pos_;
};

const RouterRegistry::Registrar reg(
    "kern", "KERN: gamma * ReLU(z / ||z||_2), top-k, weights r without renormalisation (gamma=1, eps=1e-6, "
            "order=normalize_first|activate_first, skip_zero=false)",
    [](const RouterSetup& s, ComponentArgs& a) -> std::unique_ptr<Router> { return std::make_unique<Kern>(s, a); });

}  // namespace
}  // namespace moe
