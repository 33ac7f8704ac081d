// Expert-Token Resonance (Li et al., arXiv 2406.00023 v4), ROUTERS.md §7: token-choice routing
// (TCR) followed by expert-choice routing (ECR) with a capacity C from Remark 7.
//
// Affinity delta_{t,i}: [pick, §7 logits-only] the softmax probability p_{t,i} = softmax(z_t)_i
// over all E experts (GrAP's cosine needs hidden states, which logits-only sources lack; the
// probability is comparable across tokens, which ECR needs). TCR: each token takes its top-l
// experts by affinity (= by logit; ties to the lower index). ECR: each expert keeps, among the TCR
// assignments it received, the C with the highest affinity over the whole EP group
// (moe::select_top_per_bucket: exact, ties to the globally first token) and drops the rest ([pick,
// §7] "Bottom-C" in Eq. 6 read as highest affinity). A token keeps its surviving experts in TCR
// order; a token whose l assignments are all dropped has no expert (residual only). Combine weight
// of a kept assignment: p_{t,i} / (sum of the token's l TCR probabilities) with renormalize=true
// (Mixtral-style top-l), p_{t,i} with renormalize=false; dropped assignments are not renormalised
// away (they contribute 0, as with capacity drops).
//
// Capacity (T = batch.global_tokens, the routing group is the step's whole EP group):
//   C_base = ceil(base_cf * l * T / E), base_cf = 1.1 (the paper's baseline).
//   C_min  = (1/E) * exp(d * delta_max^2 / (2 - delta_max^2))   (Remark 7).
//   C_ETR  = min(C_base, max(c_floor, ceil(C_min)))             ([pick, §7] clamp; C_base wins).
//   capacity_ratio > 0 overrides: C = ceil(capacity_ratio * C_base) (the sweep {1, 0.8, 0.6, 0.4}).
// Defaults: l = top_k, d = 4096, c_floor = 1, capacity_ratio = 0 (off), switch_step = 0,
// base_cf = 1.1, renormalize = true, delta_max = 0.0757. [pick] delta_max is not pinned down by the
// paper; 0.0757 (about 4.8 / sqrt(d), a tail value of the cosine of isotropic tokens) gives
// C_ETR / C_base = 2021 / 3380 = 0.598 at the default shape E = 64, l = 6, T = 8 EP ranks x 4096
// tokens = 32768. C_min does not depend on T while C_base grows with it, so the ratio is a property
// of the shape: at T = 4096 (one rank) the clamp gives C_ETR = C_base. The formula is steep:
// d ln(C_min) / d delta_max ~ d * delta_max = 310, so C_min moves by ~3.1% per 1e-4 of delta_max.
// Schedule (Theorem 5: TCR early, ECR later; [pick] the switch point is a step knob): steps <
// switch_step route with TCR only (no ECR cap); from switch_step on, ECR with C.
//
// Figures (per step and layer, group-wide, identical on every process):
//   c_etr        the ECR capacity C in use from the switch on (formula, or capacity_ratio override)
//   c_base       C_base
//   c_ratio      c_etr / c_base
//   c_min        Remark 7's C_min before rounding and clamping (may be +inf)
//   ecr_active   1 when ECR ran at this step (step >= switch_step), else 0
//   ecr_drop_rate  assignments dropped by ECR / TCR assignments (l * T); 0 before the switch
//   dropped_affinity_rank_mean  mean rank (1 = best) of a dropped assignment within its expert's
//                candidate list (all TCR assignments to that expert, group-wide, ordered by
//                affinity descending, ties to the globally first token). ECR keeps ranks 1..C, so
//                for an expert with n_i > C candidates the dropped ranks are C+1..n_i; NaN with no
//                drop.
//   dropped_choice_mean  mean position (1 = the token's first choice) of a dropped assignment
//                within its token's TCR list: whether ECR cuts tokens' best or secondary experts;
//                NaN with no drop.
//   token_drop_rate  tokens that lost all l assignments / T
//   max_expert_load  the largest number of assignments any expert keeps (<= c_etr after the switch)
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "harness/core/error.hpp"
#include "harness/core/select.hpp"
#include "harness/routing/router.hpp"
#include "harness/routing/topk.hpp"
#include "harness/routing/topk_rows.hpp"

namespace moe {
namespace {

class ExpertTokenResonance final : public Router {
 public:
  ExpertTokenResonance(const RouterSetup& setup, ComponentArgs& args)
      : E_(setup.num_experts),
        l_(args.get_int("l", setup.top_k)),
        d_(args.get_double("d", 4096.0)),
        delta_max_(args.get_double("delta_max", 0.0757)),
        c_floor_(args.get_int("c_floor", 1)),
        ratio_(args.get_double("capacity_ratio", 0.0)),
        switch_step_(args.get_int("switch_step", 0)),
        base_cf_(args.get_double("base_cf", 1.1)),
        renormalize_(args.get_bool("renormalize", true)) {
    if (l_ < 1 || l_ > E_)
      throw InputError("router-arg etr.l: must be in [1, experts=" + std::to_string(E_) + "]");
    if (!(d_ > 0)) throw InputError("router-arg etr.d: must be > 0");
    if (!(delta_max_ > 0 && delta_max_ <= 1))
      throw InputError("router-arg etr.delta_max: must be a cosine in (0, 1]");
    if (c_floor_ < 1) throw InputError("router-arg etr.c_floor: must be >= 1");
    if (!(ratio_ >= 0))
      throw InputError("router-arg etr.capacity_ratio: must be >= 0 (0 = use Remark 7)");
    if (switch_step_ < 0) throw InputError("router-arg etr.switch_step: must be >= 0");
    if (!(base_cf_ > 0)) throw InputError("router-arg etr.base_cf: must be > 0");
  }

  std::string missing_input(const TokenBatch& b) const override {
    if (!b.full_logits)
      return "full router logits (the affinity is the softmax probability over all experts; the "
             "source has top-k assignments only)";
    return "";
  }

  std::vector<std::string> figure_names() const override {
    return {"c_etr",
            "c_base",
            "c_ratio",
            "c_min",
            "ecr_active",
            "ecr_drop_rate",
            "dropped_affinity_rank_mean",
            "dropped_choice_mean",
            "token_drop_rate",
            "max_expert_load"};
  }
  std::vector<double> figures() const override { return figures_; }

  void route(const TokenBatch& b, const Comm& group, RoutingPlan& plan) override {
    const int64_t T = b.num_tokens;
    const int32_t E = b.num_experts;
    const int32_t l = static_cast<int32_t>(l_);
    const int64_t A = T * l;
    tcr_expert_.resize(static_cast<size_t>(A));
    affinity_.resize(static_cast<size_t>(A));
    // TCR selection (exact comparisons, identical on any split), then the affinities row by row
    // with one scalar routine: topk_rows' own softmax weights differ in the last bits between its
    // SIMD blocks and its scalar tail, which would make ECR's keys depend on where a process's
    // batch starts.
    topk_rows(b.logits.data(), T, E, l, TopKWeights::logits, tcr_expert_.data(), affinity_.data());
    scratch_.resize(static_cast<size_t>(E));
    for (int64_t t = 0; t < T; ++t) {
      float* p = affinity_.data() + t * l;
      const float top = p[0];
      const float norm = sum_exp_shifted(b.logits.data() + t * E, E, top, scratch_.data());
      for (int32_t j = 0; j < l; ++j) p[j] = exp_nonpositive(p[j] - top) / norm;
    }

    const int64_t G = b.global_tokens;
    const int64_t c_base = std::max<int64_t>(
        1, static_cast<int64_t>(std::ceil(base_cf_ * l * static_cast<double>(G) / E - 1e-9)));
    const double x = delta_max_ * delta_max_;
    const double log_c_min = d_ * x / (2.0 - x) - std::log(static_cast<double>(E));
    const double c_min = std::exp(log_c_min);
    int64_t c;
    if (ratio_ > 0) {
      c = std::max<int64_t>(
          1, static_cast<int64_t>(std::ceil(ratio_ * static_cast<double>(c_base) - 1e-9)));
    } else {
      c = log_c_min >= std::log(static_cast<double>(c_base))
              ? c_base
              : std::min(c_base, std::max(c_floor_, static_cast<int64_t>(std::ceil(c_min))));
    }
    const bool active = b.step >= switch_step_;
    if (active) {
      quota_.assign(static_cast<size_t>(E), c);
      select_top_per_bucket(group, E, tcr_expert_, affinity_, quota_, kept_);
    } else {
      kept_.assign(static_cast<size_t>(A), 1);
    }

    // Plan (kept assignments in TCR order) and local counts:
    // [demand per expert (E), kept per expert (E), dropped per TCR position (l), tokens fully
    // dropped].
    counts_.assign(2 * static_cast<size_t>(E) + l + 1, 0);
    int64_t* demand = counts_.data();
    int64_t* load = demand + E;
    int64_t* dropped_at = load + E;
    plan.reset(T, E, A);
    for (int64_t t = 0; t < T; ++t) {
      const int32_t* ex = tcr_expert_.data() + t * l;
      const float* p = affinity_.data() + t * l;
      const uint8_t* keep = kept_.data() + t * l;
      float norm = 1.f;
      if (renormalize_) {
        norm = 0.f;
        for (int32_t j = 0; j < l; ++j) norm += p[j];
      }
      int32_t n_kept = 0;
      for (int32_t j = 0; j < l; ++j) {
        ++demand[ex[j]];
        if (!keep[j]) {
          ++dropped_at[j];
          continue;
        }
        ++load[ex[j]];
        ++n_kept;
        plan.expert.push_back(ex[j]);
        plan.weight.push_back(p[j] / norm);
      }
      counts_.back() += n_kept == 0;
      plan.offsets[t + 1] = static_cast<int64_t>(plan.expert.size());
    }
    group.sum(counts_);

    int64_t dropped = 0, choice_sum = 0, rank_sum = 0, max_load = 0;
    for (int32_t j = 0; j < l; ++j) {
      dropped += dropped_at[j];
      choice_sum += dropped_at[j] * (j + 1);
    }
    for (int32_t e = 0; e < E; ++e) {
      max_load = std::max(max_load, load[e]);
      const int64_t n = demand[e], kept = load[e];
      rank_sum += (n - kept) * (kept + 1 + n) /
                  2;  // ranks kept+1 .. n (an arithmetic series: product even)
    }
    const double nan = std::numeric_limits<double>::quiet_NaN();
    const double dropped_d = static_cast<double>(dropped);
    figures_ = {static_cast<double>(c),
                static_cast<double>(c_base),
                static_cast<double>(c) / static_cast<double>(c_base),
                c_min,
                active ? 1.0 : 0.0,
                static_cast<double>(dropped) / static_cast<double>(G * l),
                dropped > 0 ? static_cast<double>(rank_sum) / dropped_d : nan,
                dropped > 0 ? static_cast<double>(choice_sum) / dropped_d : nan,
                static_cast<double>(counts_.back()) / static_cast<double>(G),
                static_cast<double>(max_load)};
  }

 private:
  int32_t E_;
  int64_t l_;
  double d_, delta_max_;
  int64_t c_floor_;
  double ratio_;
  int64_t switch_step_;
  double base_cf_;
  bool renormalize_;
  std::vector<double> figures_;
  std::vector<int32_t> tcr_expert_;
  std::vector<float> affinity_, scratch_;
  std::vector<int64_t> quota_, counts_;
  std::vector<uint8_t> kept_;
};

const RouterRegistry::Registrar reg(
    "etr",
    "Expert-Token Resonance: TCR top-l by softmax affinity, then ECR keeps each expert's C most "
    "affine tokens "
    "(l=top_k, d=4096, delta_max=0.0757, c_floor=1, capacity_ratio=0 (off), switch_step=0, "
    "base_cf=1.1, renormalize=true)",
    [](const RouterSetup& s, ComponentArgs& a) -> std::unique_ptr<Router> {
      return std::make_unique<ExpertTokenResonance>(s, a);
    });

}  // namespace
}  // namespace moe
