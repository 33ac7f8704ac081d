// Sinkhorn / S-BASE routing (Clark et al. 2022; Megatron-LM's `sinkhorn`), ROUTERS.md §8.
// Non-causal: collective over the EP group (T = batch.global_tokens tokens).
//
// cost_te = exp(z_te - max_e z_te) per token. Megatron uses exp(z); the row shift multiplies row t by
// a constant, which the row scaling d0_t absorbs, so d1 and the balanced matrix are the same (up to
// Megatron's eps, which we keep on both sums). Starting from d1 = 1, alternately
//   d0_t = 1 / (T * (sum_e cost_te d1_e + eps))       (local per token)
//   d1_e = 1 / (E * (sum_t cost_te d0_t + eps))       (column sums over the whole group)
// with eps = 1e-8, until the change in d1 is at most `tol`, or `max_iters` iterations.
// [pick] Change = mean_e |d1_e / mean(d1) - d1_prev_e / mean(d1_prev)|: relative to the mean of d1,
//        and blind to a common scale of d1, which does not change any token's ranking. Megatron tests
//        the absolute mean |d1_e - d1_prev_e| > tol; d1 stays near 1 (it starts at 1 and mostly its
//        shape changes), so the two agree closely at tol = 1e-4. The reason for the scale-free form:
//        the eps on the column sums shrinks every d1_e by a factor (1 - eps/colsum_e) per iteration,
//        a drift of ~E*eps*d1 that an absolute test sees as a change floor (about 2e-7 relative at
//        E=16), so a tight tol would otherwise never be met.
// Column sums are bit-identical on any process count: per-EP-rank partials (tokens in order) summed
// in EP-rank order with moe::ordered_rank_sum. Every process runs the same iterations.
// Then each token takes the top-k of cost_te * d1_e (d0_t does not change the ranking inside a row),
// largest first, ties to the lower expert index. Weights from the original logits: sigmoid(z_te)
// for k = 1, softmax(z_t) over all E experts (the selected entries, not renormalised) for k > 1.
// [pick] cost in float with the harness's exp (relative error < 2e-7); sums, d0, d1 and the
//        balanced scores in double.
// [pick] k larger than E is clamped to E.
//
// Knobs: tol (default 1e-4, > 0), max_iters (default 100, >= 1).
//
// Figures (per step and layer, identical on every process):
//   iterations  Sinkhorn iterations run (one d0 and one d1 update each)
//   balance     max / mean of the group's per-expert selection counts (mean = T*k/E); 1 = perfect
//   converged   1 if the change fell to tol within max_iters, else 0
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "harness/core/error.hpp"
#include "harness/core/select.hpp"
#include "harness/routing/router.hpp"
#include "harness/routing/topk.hpp"

namespace moe {
namespace {

constexpr double kEps = 1e-8;  // Megatron's

// Indices of the k largest of v[0..n), largest first, ties to the lower index.
void topk_double(const double* v, int32_t n, int32_t k, int32_t* idx, double* val) {
  int32_t filled = 0;
  for (int32_t e = 0; e < n; ++e) {
    const double x = v[e];
    if (filled == k && !(x > val[k - 1])) continue;
    int32_t i = filled < k ? filled++ : k - 1;
    while (i > 0 && val[i - 1] < x) {
      val[i] = val[i - 1];
      idx[i] = idx[i - 1];
      --i;
    }
    val[i] = x;
    idx[i] = e;
  }
}

class Sinkhorn final : public Router {
 public:
  Sinkhorn(const RouterSetup& setup, ComponentArgs& args)
      : k_(setup.top_k), tol_(args.get_double("tol", 1e-4)), max_iters_(args.get_int("max_iters", 100)) {
    if (!(tol_ > 0) || !std::isfinite(tol_))
      throw InputError("router-arg sinkhorn.tol: must be a finite number > 0 (got " + std::to_string(tol_) + ")");
    if (max_iters_ < 1) throw InputError("router-arg sinkhorn.max_iters: must be >= 1 (got " + std::to_string(max_iters_) + ")");
  }

  std::string missing_input(const TokenBatch& batch) const override {
    return batch.full_logits ? "" : "full router logits (the source has top-k assignments only)";
  }

  std::vector<std::string> figure_names() const override { return {"iterations", "balance", "converged"}; }
  std::vector<double> figures() const override { return figures_; }

  void route(const TokenBatch& batch, const Comm& group, RoutingPlan& plan) override {
    const int64_t n = batch.num_tokens;
    const int32_t E = batch.num_experts;
    const int32_t k = std::min(k_, E);
    const int64_t T = batch.global_tokens > 0 ? batch.global_tokens : group.sum(n);
    // EP ranks hosted here; without rank information the process counts as one rank.
    const int32_t ranks_here = batch.ranks_here();

    cost_.resize(static_cast<size_t>(n) * E);
    row_sum_.resize(static_cast<size_t>(n));
    for (int64_t t = 0; t < n; ++t) {
      const float* z = batch.logits.data() + t * E;
      float* c = cost_.data() + t * E;
      const float m = *std::max_element(z, z + E);
      for (int32_t e = 0; e < E; ++e) c[e] = exp_nonpositive(z[e] - m);
      double s = 0;
      for (int32_t e = 0; e < E; ++e) s += c[e];
      row_sum_[t] = s;
    }

    d1_.assign(static_cast<size_t>(E), 1.0);
    next_.resize(static_cast<size_t>(E));
    partial_.resize(static_cast<size_t>(ranks_here) * E);
    int64_t iterations = 0;
    bool converged = false;
    const double inv_T = 1.0 / static_cast<double>(std::max<int64_t>(T, 1));
    while (iterations < max_iters_) {
      // One pass over cost: d0_t from d1, then this rank's column partials of cost * d0.
      std::fill(partial_.begin(), partial_.end(), 0.0);
      RankCursor rank_of(batch);
      for (int64_t t = 0; t < n; ++t) {
        const float* c = cost_.data() + t * E;
        double a0 = 0, a1 = 0, a2 = 0, a3 = 0;
        int32_t e = 0;
        for (; e + 4 <= E; e += 4) {
          a0 += c[e] * d1_[e];
          a1 += c[e + 1] * d1_[e + 1];
          a2 += c[e + 2] * d1_[e + 2];
          a3 += c[e + 3] * d1_[e + 3];
        }
        for (; e < E; ++e) a0 += c[e] * d1_[e];
        const double d0 = inv_T / ((a0 + a1) + (a2 + a3) + kEps);
        double* p = partial_.data() + static_cast<size_t>(rank_of(t)) * E;
        for (int32_t j = 0; j < E; ++j) p[j] += c[j] * d0;
      }
      const std::vector<double> col = ordered_rank_sum(group, partial_, E, ranks_here);
      double prev_total = 0, total = 0;
      for (int32_t e = 0; e < E; ++e) {
        prev_total += d1_[e];
        next_[e] = 1.0 / (E * (col[e] + kEps));
        total += next_[e];
      }
      // Change of the shape of d1: mean_e |d1_e / mean(d1) - d1_prev_e / mean(d1_prev)|.
      double change = 0;
      for (int32_t e = 0; e < E; ++e) change += std::abs(next_[e] * (E / total) - d1_[e] * (E / prev_total));
      d1_.swap(next_);
      ++iterations;
      if (change <= tol_ * E) {
        converged = true;
        break;
      }
    }

    // Top-k of the balanced scores; weights from the original logits.
    plan.reset(n, E, n * k);
    plan.expert.resize(static_cast<size_t>(n) * k);
    plan.weight.resize(static_cast<size_t>(n) * k);
    score_.resize(static_cast<size_t>(E));
    val_.resize(static_cast<size_t>(k));
    std::vector<int64_t> counts(static_cast<size_t>(E), 0);
    for (int64_t t = 0; t < n; ++t) {
      const float* c = cost_.data() + t * E;
      for (int32_t e = 0; e < E; ++e) score_[e] = c[e] * d1_[e];
      int32_t* idx = plan.expert.data() + t * k;
      float* w = plan.weight.data() + t * k;
      topk_double(score_.data(), E, k, idx, val_.data());
      for (int32_t j = 0; j < k; ++j) {
        ++counts[idx[j]];
        if (k == 1) {
          w[j] = static_cast<float>(1.0 / (1.0 + std::exp(-static_cast<double>(batch.logits[t * E + idx[j]]))));
        } else {
          w[j] = static_cast<float>(c[idx[j]] / row_sum_[t]);
        }
      }
      plan.offsets[t + 1] = (t + 1) * k;
    }
    group.sum(counts);
    const double mean = static_cast<double>(T) * k / E;
    const double balance = mean > 0 ? static_cast<double>(*std::max_element(counts.begin(), counts.end())) / mean : 0.0;
    figures_ = {static_cast<double>(iterations), balance, converged ? 1.0 : 0.0};
  }

 private:
  int32_t k_;
  double tol_;
  int64_t max_iters_;
  std::vector<double> figures_;
  // Scratch reused across calls.
  std::vector<float> cost_;
  std::vector<double> row_sum_, d1_, next_, partial_, score_, val_;
};

const RouterRegistry::Registrar reg(
    "sinkhorn",
    "Sinkhorn-balanced top-k over the EP group (Megatron), sigmoid weight for k=1, softmax for k>1 (tol=1e-4, "
    "max_iters=100)",
    [](const RouterSetup& s, ComponentArgs& a) -> std::unique_ptr<Router> { return std::make_unique<Sinkhorn>(s, a); });

}  // namespace
}  // namespace moe
