// BASE layers (Lewis et al. 2021), ROUTERS.md §8: balanced top-1 linear assignment by a distributed
// auction. Non-causal: collective over the EP group (T = batch.global_tokens tokens).
//
// Problem: choose one expert a(t) per token maximising sum_t z_{t,a(t)} so that expert e receives
// exactly cap_e tokens. [pick] cap_e = floor(T/E), plus one for the experts e < T mod E (the
// lower-index experts take the remainder), so sum_e cap_e = T; when E divides T every expert gets
// exactly T/E. With T < E the experts e >= T stay empty and take no part in the auction.
// [pick] One expert per token whatever k (BASE is top-1); weight sigmoid(z_{t,a(t)}).
//
// Auction (Jacobi: every unassigned token bids in the same round). Prices p_e (float) are identical
// on every process. In a round each unassigned token t finds its best expert e1 = argmax_e
// (z_te - p_e) (ties to the lower index) and second best value v2 = max_{e != e1} (z_te - p_e), and
// bids b = p_e1 + (v1 - v2) + eps. Each expert keeps the cap_e highest keys among its holders (who
// keep their winning bid as key) and its new bidders, with moe::select_top_per_bucket (exact over the
// group, equal keys to the lower global token index); displaced tokens are unassigned again. When an
// expert is full its price becomes its lowest kept bid (an MPI_MIN of floats, exact in any order);
// until then it keeps its price. A phase ends when every expert is full (all tokens assigned).
// Bids are floats rounded down, and at least the next float above the price, so a price always rises.
// epsilon-scaling: phases with eps = range/4, range/4/s, ... down to eps_final = epsilon * range,
// where range = max z - min z over the group (1 if all logits are equal) and s = epsilon_scaling;
// prices carry over between phases, assignments restart.
// Optimality: at the end every token is within eps_final of its best expert at the final prices
// (eps-complementary slackness), so with exact balance the objective is within T * eps_final of the
// optimum. The figure objective_gap_bound is the a-posteriori duality gap
//   sum_t [max_e (z_te - p_e) - (z_{t,a(t)} - p_{a(t)})]  (>= optimum - objective, <= T * eps_final
// up to float rounding of the bids), which certifies the result for any prices.
// Cost: each round is O(unassigned * E + holders of the experts that got bids) work, one allreduce of
// E int64, one of E floats, and a group selection (~35 allreduces) only when some expert is
// over-subscribed.
//
// Knobs: epsilon (default 1e-4, in (0, 1]): final bid increment as a fraction of the logit range;
//        epsilon_scaling (default 8, > 1): eps divisor between phases;
//        max_rounds (default 100000, >= 1): bidding rounds over all phases of one route() before it
//        fails with an error (the same on every process).
// Logits must be finite (checked group-wide).
//
// Figures (per step and layer, identical on every process):
//   rounds               bidding rounds over all phases
//   objective_gap_bound  certified bound on (optimal - achieved) sum of logits, see above
//   mean_price           mean over experts of the final prices p_e (experts that get a token)
#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "harness/core/error.hpp"
#include "harness/core/select.hpp"
#include "harness/routing/router.hpp"

namespace moe {
namespace {

class Base final : public Router {
 public:
  Base(const RouterSetup&, ComponentArgs& args)
      : epsilon_(args.get_double("epsilon", 1e-4)),
        scaling_(args.get_double("epsilon_scaling", 8.0)),
        max_rounds_(args.get_int("max_rounds", 100000)) {
    if (!(epsilon_ > 0 && epsilon_ <= 1))
      throw InputError("router-arg base.epsilon: must be in (0, 1] (a fraction of the logit range; got " + std::to_string(epsilon_) + ")");
    if (!(scaling_ > 1) || !std::isfinite(scaling_))
      throw InputError("router-arg base.epsilon_scaling: must be a finite number > 1 (got " + std::to_string(scaling_) + ")");
    if (max_rounds_ < 1) throw InputError("router-arg base.max_rounds: must be >= 1 (got " + std::to_string(max_rounds_) + ")");
  }

  std::string missing_input(const TokenBatch& batch) const override {
    return batch.full_logits ? "" : "full router logits (the source has top-k assignments only)";
  }

  std::vector<std::string> figure_names() const override { return {"rounds", "objective_gap_bound", "mean_price"}; }
  std::vector<double> figures() const override { return figures_; }

  void route(const TokenBatch& batch, const Comm& group, RoutingPlan& plan) override {
    const int64_t n = batch.num_tokens;
    const int32_t E = batch.num_experts;
    const int64_t T = batch.global_tokens > 0 ? batch.global_tokens : group.sum(n);
    const int32_t ranks_here = batch.ranks_here();
    const float* z = batch.logits.data();

    // Group-wide logit range (max and min are exact in any order) and a finiteness check.
    float lo = std::numeric_limits<float>::infinity(), hi = -lo;
    int64_t bad = 0;
    for (int64_t i = 0; i < n * E; ++i) {
      if (!std::isfinite(z[i])) ++bad;
      lo = std::min(lo, z[i]);
      hi = std::max(hi, z[i]);
    }
    bad = group.sum(bad);
    if (bad > 0) throw InputError("router base: " + std::to_string(bad) + " logits are not finite (the auction needs finite logits)");
    const double zmax = group.max(static_cast<double>(hi)), zmin = -group.max(-static_cast<double>(lo));
    const double range = zmax > zmin ? zmax - zmin : 1.0;
    const double eps_final = epsilon_ * range;

    cap_.assign(static_cast<size_t>(E), T / E);
    for (int64_t e = 0; e < T % E; ++e) ++cap_[e];
    // With T < E the experts e >= T get no token and take no part (their price would be infinite).
    const int32_t active = static_cast<int32_t>(std::min<int64_t>(E, T));
    price_.assign(static_cast<size_t>(E), 0.0f);
    bid_.assign(static_cast<size_t>(n), 0.0f);
    new_bid_.assign(static_cast<size_t>(n), 0.0f);
    assigned_.assign(static_cast<size_t>(n), -1);
    held_by_.resize(static_cast<size_t>(E));
    std::vector<int64_t> holders(E), bidders(E);
    std::vector<uint8_t> over(E);
    std::vector<float> low(E);

    int64_t rounds = 0;
    double eps = std::max(eps_final, range / 4);
    for (;;) {  // phases
      for (auto& h : held_by_) h.clear();
      std::fill(holders.begin(), holders.end(), 0);
      unassigned_.resize(static_cast<size_t>(n));
      for (int64_t t = 0; t < n; ++t) unassigned_[t] = t;
      int64_t held = 0;
      while (held < T) {
        if (rounds >= max_rounds_)
          throw Error("router base: the auction did not finish within max_rounds=" + std::to_string(max_rounds_) + " rounds (" +
                      std::to_string(T - held) + " of " + std::to_string(T) + " tokens unassigned at eps=" + std::to_string(eps) +
                      "); raise base.max_rounds or base.epsilon");
        ++rounds;
        // Bids of the unassigned tokens, as (expert, token) in that order.
        bids_.clear();
        std::fill(bidders.begin(), bidders.end(), 0);
        for (const int64_t t : unassigned_) {
          const float* row = z + t * E;
          int32_t e1 = 0;
          double v1 = static_cast<double>(row[0]) - price_[0], v2 = -std::numeric_limits<double>::infinity();
          for (int32_t e = 1; e < active; ++e) {
            const double v = static_cast<double>(row[e]) - price_[e];
            if (v > v1) {
              v2 = v1;
              v1 = v;
              e1 = e;
            } else if (v > v2) {
              v2 = v;
            }
          }
          const double gain = active > 1 ? v1 - v2 : 0.0;
          const double b = static_cast<double>(price_[e1]) + gain + eps;
          float bf = static_cast<float>(b);
          if (static_cast<double>(bf) > b) bf = std::nextafter(bf, -std::numeric_limits<float>::infinity());
          if (!(bf > price_[e1])) bf = std::nextafter(price_[e1], std::numeric_limits<float>::infinity());
          new_bid_[t] = bf;
          bids_.emplace_back(e1, t);
          ++bidders[e1];
        }
        std::sort(bids_.begin(), bids_.end());
        group.sum(bidders);
        // Under-subscribed experts take every bidder; over-subscribed ones keep their top cap_e of
        // holders and bidders (entries per expert in token order, as select_top_per_bucket wants).
        unassigned_.clear();
        bucket_.clear();
        key_.clear();
        entry_.clear();
        is_bid_.clear();
        bool any_over = false;
        for (int32_t e = 0, i = 0; e < active; ++e) {
          int32_t j = i;
          while (j < static_cast<int32_t>(bids_.size()) && bids_[j].first == e) ++j;
          over[e] = holders[e] + bidders[e] > cap_[e];
          auto& h = held_by_[e];
          if (!over[e]) {
            const size_t old = h.size();
            for (int32_t q = i; q < j; ++q) {
              const int64_t t = bids_[q].second;
              h.push_back(t);
              bid_[t] = new_bid_[t];
            }
            std::inplace_merge(h.begin(), h.begin() + static_cast<std::ptrdiff_t>(old), h.end());
          } else {
            any_over = true;
            size_t a = 0;
            int32_t q = i;
            while (a < h.size() || q < j) {
              const bool take_holder = q == j || (a < h.size() && h[a] < bids_[q].second);
              const int64_t t = take_holder ? h[a++] : bids_[q++].second;
              bucket_.push_back(e);
              key_.push_back(take_holder ? bid_[t] : new_bid_[t]);
              entry_.push_back(t);
              is_bid_.push_back(take_holder ? 0 : 1);
            }
            h.clear();
          }
          i = j;
        }
        if (any_over) {
          select_top_per_bucket(group, E, bucket_, key_, cap_, selected_);
          for (size_t i = 0; i < entry_.size(); ++i) {
            const int64_t t = entry_[i];
            if (!selected_[i]) {
              unassigned_.push_back(t);  // displaced holder or rejected bidder
              continue;
            }
            held_by_[bucket_[i]].push_back(t);
            if (is_bid_[i]) bid_[t] = new_bid_[t];
          }
        }
        // New holder counts are known everywhere; full experts that changed take their lowest bid.
        bool reprice = false;
        held = 0;
        for (int32_t e = 0; e < E; ++e) {
          holders[e] = std::min(cap_[e], holders[e] + bidders[e]);
          held += holders[e];
          reprice = reprice || (bidders[e] > 0 && holders[e] == cap_[e]);
        }
        if (reprice) {
          std::fill(low.begin(), low.end(), std::numeric_limits<float>::infinity());
          for (int32_t e = 0; e < active; ++e)
            if (bidders[e] > 0 && holders[e] == cap_[e])
              for (const int64_t t : held_by_[e]) low[e] = std::min(low[e], bid_[t]);
          MOE_MPI(MPI_Allreduce(MPI_IN_PLACE, low.data(), E, MPI_FLOAT, MPI_MIN, group.raw()));
          for (int32_t e = 0; e < E; ++e)
            if (bidders[e] > 0 && holders[e] == cap_[e]) price_[e] = low[e];
        }
      }
      if (eps <= eps_final) break;
      eps = std::max(eps_final, eps / scaling_);
    }
    for (int32_t e = 0; e < active; ++e)
      for (const int64_t t : held_by_[e]) assigned_[t] = e;

    // Plan, and the duality gap: per-EP-rank partial sums of each token's slack, in rank order.
    plan.reset(n, E, n);
    std::vector<double> slack(static_cast<size_t>(ranks_here), 0.0);
    RankCursor rank_of(batch);
    for (int64_t t = 0; t < n; ++t) {
      const float* row = z + t * E;
      const int32_t a = assigned_[t];
      double best = -std::numeric_limits<double>::infinity();
      for (int32_t e = 0; e < active; ++e) best = std::max(best, static_cast<double>(row[e]) - price_[e]);
      slack[static_cast<size_t>(rank_of(t))] += best - (static_cast<double>(row[a]) - price_[a]);
      plan.expert.push_back(a);
      plan.weight.push_back(static_cast<float>(1.0 / (1.0 + std::exp(-static_cast<double>(row[a])))));
      plan.offsets[t + 1] = t + 1;
    }
    const double gap = ordered_rank_sum(group, slack, 1, ranks_here)[0];
    double price_sum = 0;
    for (int32_t e = 0; e < active; ++e) price_sum += price_[e];
    figures_ = {static_cast<double>(rounds), gap, active > 0 ? price_sum / active : 0.0};
  }

 private:
  double epsilon_;
  double scaling_;
  int64_t max_rounds_;
  std::vector<double> figures_;
  // Scratch reused across calls.
  std::vector<int64_t> cap_;
  std::vector<float> price_, bid_, new_bid_;
  std::vector<int32_t> assigned_;
  std::vector<std::vector<int64_t>> held_by_;      // [E] this process's holders, ascending token
  std::vector<int64_t> unassigned_;
  std::vector<std::pair<int32_t, int64_t>> bids_;  // (expert, token)
  std::vector<uint8_t> is_bid_;
  std::vector<int32_t> bucket_;
  std::vector<float> key_;
  std::vector<int64_t> entry_;
  std::vector<uint8_t> selected_;
};

const RouterRegistry::Registrar reg(
    "base",
    "BASE layers: exactly balanced top-1 assignment maximising the summed logits, distributed auction with "
    "epsilon-scaling (epsilon=1e-4 of the logit range, epsilon_scaling=8, max_rounds=100000)",
    [](const RouterSetup& s, ComponentArgs& a) -> std::unique_ptr<Router> { return std::make_unique<Base>(s, a); });

}  // namespace
}  // namespace moe
