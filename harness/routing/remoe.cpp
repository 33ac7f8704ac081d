// ReMoE (ReLU routing, Wang, Chen, Zhu, arXiv 2412.14711), replayed as ReLU(z - theta_l):
// ROUTERS.md §4.
//
// Expert i is active for a token iff z_i > theta_l, with combine weight z_i - theta_l; a token gets
// 0..E experts, in descending weight order (= descending logit; equal logits: lower index first).
// There is no normalisation and no capacity of its own. Target sparsity S* = 1 - k/E (k = top_k).
// Sparsity S_l = zeros / (tokens x experts) of layer l in one step over the whole EP group, from
// integer counts.
//
// Knobs (defaults):
//   mode       = controller  [pick, §4 (a)] causal: theta_l starts at theta0 and after each step
//                            theta_l <- theta_l + eta_l * sign(S* - S_l) (per layer; the sign from
//                            the integer counts, 0 when S_l = S* exactly). eta_l = eta_scale x the
//                            std of all logits of layer l in the first step that routes it
//                            (population std, from per-EP-rank sums and sums of squares added in
//                            rank order, so it is bit-identical on any process split).
//              | quantile    §4 (b), non-causal: per step and layer, exactly k*T assignments are
//                            active group-wide: the k*T largest logits of the step and layer
//                            (select_top_per_bucket, one bucket; equal logits to the globally first
//                            (token, expert) pair). theta [pick] = the midpoint between the
//                            smallest selected and the largest unselected logit, so ReLU(z - theta)
//                            selects the same set when there is no tie at the boundary; boundary
//                            ties that are selected get weight 0 (and still count as active).
//   warm_start = quantile    controller start: at the first step that routes layer l, theta_l is
//                            the threshold quantile mode would use on that batch (exactly k*T
//                            active pairs group-wide), so the controller starts at its target
//                            instead of dense (ReLU of centred logits keeps ~E/2 experts per
//                            token, and the sign controller needs tens of steps to get down).
//              | none        start at theta0 (the paper's cold start).
//   eta_scale  = 0.05        controller step in units of the logit std, > 0.
//   theta0     = 0           controller start with warm_start=none (giving theta0 alone implies
//                            warm_start=none).
//
// Weights are z_i - theta computed in double, then stored as float. A token's active experts are
// ordered by counting ranks (vectorised; a stable sort when logits tie).
//
// Figures (per step and layer, global over the EP group):
//   sparsity             S_l: fraction of (token, expert) pairs with weight 0 (inactive)
//   theta                the threshold used in this step (after the updates of earlier steps)
//   mean_active_experts  active pairs / tokens (= E (1 - S_l)), before capacity
//   zero_expert_tokens   fraction of tokens with no active expert (they skip the MoE layer)
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <string>

#include "harness/core/error.hpp"
#include "harness/core/select.hpp"
#include "harness/routing/rank_desc.hpp"
#include "harness/routing/router.hpp"

namespace moe {
namespace {

constexpr int64_t kBlock = 64;  // tokens per call of route_block

// Buffers of route_block, sized by the caller (route_block allocates nothing).
struct Buffers {
  std::vector<float> kv;  // active logits of one token
  std::vector<int32_t> ki;
  std::vector<int32_t> rank;
  std::vector<int32_t> order;
  std::vector<int32_t> out_e;  // [kBlock * E] the block's plan entries
  std::vector<float> out_w;
  std::vector<int32_t> count;  // [kBlock]
  void size(int32_t E) {
    kv.resize(static_cast<size_t>(E) + 16);
    ki.resize(static_cast<size_t>(E));
    rank.resize(static_cast<size_t>(E) + 16);
    order.resize(static_cast<size_t>(E));
    out_e.resize(static_cast<size_t>(kBlock * E));
    out_w.resize(static_cast<size_t>(kBlock * E));
    count.resize(kBlock);
  }
};

// Tokens [t0, t1) (at most kBlock): expert j is active iff z_j > theta (selected == nullptr) or
// selected[t * E + j] (quantile mode); weight z_j - theta, best first (equal logits: lower index).
// Must not throw or allocate: GCC 12 treats target_clones functions as nothrow.
__attribute__((target_clones("arch=x86-64-v4", "avx2", "default"))) void route_block(
    const float* logits, const uint8_t* selected, int64_t t0, int64_t t1, int32_t E, double theta,
    Buffers& b) {
  int32_t* out_e = b.out_e.data();
  float* out_w = b.out_w.data();
  for (int64_t t = t0; t < t1; ++t) {
    const float* z = logits + t * E;
    int32_t n = 0;
    if (selected) {
      const uint8_t* sel = selected + t * E;
      for (int32_t j = 0; j < E; ++j) {  // branch-free compaction
        b.ki[n] = j;
        n += sel[j] != 0;
      }
    } else {
      for (int32_t j = 0; j < E; ++j) {
        b.ki[n] = j;
        n += static_cast<double>(z[j]) > theta;
      }
    }
    for (int32_t q = 0; q < n; ++q) b.kv[q] = z[b.ki[q]];
    if (rank_desc(b.kv.data(), n, b.rank.data())) {
      for (int32_t q = 0; q < n; ++q) {
        out_e[b.rank[q]] = b.ki[q];
        out_w[b.rank[q]] = static_cast<float>(static_cast<double>(b.kv[q]) - theta);
      }
    } else {
      int32_t* order = b.order.data();
      std::iota(order, order + n, 0);
      std::stable_sort(order, order + n, [&](int32_t x, int32_t y) { return b.kv[x] > b.kv[y]; });
      for (int32_t q = 0; q < n; ++q) {
        out_e[q] = b.ki[order[q]];
        out_w[q] = static_cast<float>(static_cast<double>(b.kv[order[q]]) - theta);
      }
    }
    out_e += n;
    out_w += n;
    b.count[t - t0] = n;
  }
}

struct Counts {
  int64_t active = 0;
  int64_t zero_tokens = 0;
};

Counts route_all(const TokenBatch& batch, const uint8_t* selected, double theta, Buffers& b,
                 RoutingPlan& plan) {
  Counts c;
  const int64_t T = batch.num_tokens;
  for (int64_t t0 = 0; t0 < T; t0 += kBlock) {
    const int64_t t1 = std::min(T, t0 + kBlock);
    route_block(batch.logits.data(), selected, t0, t1, batch.num_experts, theta, b);
    int64_t n = 0;
    for (int64_t t = t0; t < t1; ++t) {
      const int32_t nt = b.count[t - t0];
      n += nt;
      c.zero_tokens += nt == 0;
      plan.offsets[t + 1] = plan.offsets[t] + nt;
    }
    plan.expert.insert(plan.expert.end(), b.out_e.begin(), b.out_e.begin() + n);
    plan.weight.insert(plan.weight.end(), b.out_w.begin(), b.out_w.begin() + n);
    c.active += n;
  }
  return c;
}

class ReMoE final : public Router {
 public:
  ReMoE(const RouterSetup& setup, ComponentArgs& args)
      : E_(setup.num_experts),
        k_(setup.top_k),
        quantile_(false),
        eta_scale_(args.get_double("eta_scale", 0.05)),
        theta0_(args.get_double("theta0", 0.0)) {
    const std::string mode = args.get_string("mode", "controller");
    if (mode == "quantile")
      quantile_ = true;
    else if (mode != "controller")
      throw InputError("router-arg remoe.mode: '" + mode + "' is not controller or quantile");
    if (!(eta_scale_ > 0))
      throw InputError("router-arg remoe.eta_scale: must be > 0 (got " +
                       std::to_string(eta_scale_) + ")");
    if (!(k_ >= 1 && k_ <= E_)) throw InputError("remoe: needs 1 <= top_k <= experts");
    const bool theta0_set = args.values().count("theta0") > 0;
    const std::string warm = args.get_string("warm_start", theta0_set ? "none" : "quantile");
    if (warm == "quantile") {
      if (theta0_set)
        throw InputError(
            "router-arg remoe.theta0: only used with warm_start=none (warm_start=quantile sets "
            "theta itself)");
      warm_start_ = true;
    } else if (warm != "none") {
      throw InputError("router-arg remoe.warm_start: '" + warm + "' is not quantile or none");
    }
    grow(std::max(setup.num_layers, 1));
  }

  void route(const TokenBatch& batch, const Comm& group, RoutingPlan& plan) override {
    const int64_t T = batch.num_tokens;
    const int32_t E = batch.num_experts;
    const int32_t l = batch.layer;
    if (l < 0) fail("remoe: negative layer");
    grow(l + 1);
    buf_.size(E);
    plan.reset(T, E, T * (k_ + 2));
    const int64_t T_group = group.sum(T);
    Counts c;
    double theta = 0;
    if (quantile_) {
      theta = quantile_threshold(batch, group, T_group);
      c = route_all(batch, selected_.data(), theta, buf_, plan);
    } else {
      if (!eta_known_[l]) {
        eta_[l] = eta_scale_ * logit_std(batch, group, T_group);
        eta_known_[l] = true;
        if (warm_start_) theta_[l] = quantile_threshold(batch, group, T_group);
      }
      theta = theta_[l];
      c = route_all(batch, nullptr, theta, buf_, plan);
    }
    int64_t counts[2] = {c.active, c.zero_tokens};
    group.sum(std::span<int64_t>(counts, 2));
    const int64_t pairs = T_group * E;
    const int64_t zeros = pairs - counts[0];
    pending_[l] = true;
    // sign(S* - S_l) = sign((E - k) T - zeros), exactly.
    last_sign_[l] = (static_cast<int64_t>(E - k_) * T_group > zeros) -
                    (static_cast<int64_t>(E - k_) * T_group < zeros);
    const double Tg = static_cast<double>(T_group);
    figures_ = {pairs ? static_cast<double>(zeros) / static_cast<double>(pairs) : 0.0, theta,
                T_group ? static_cast<double>(counts[0]) / Tg : 0.0,
                T_group ? static_cast<double>(counts[1]) / Tg : 0.0};
  }

  void end_step(const Comm&) override {
    if (quantile_) return;
    for (size_t l = 0; l < theta_.size(); ++l) {
      if (!pending_[l]) continue;
      theta_[l] += eta_[l] * last_sign_[l];
      pending_[l] = false;
    }
  }

  void save_state(StateWriter& out) const override {
    out.put_vec(theta_);
    out.put_vec(eta_);
    out.put_bools(eta_known_);
    out.put_bools(pending_);
    out.put_vec(last_sign_);
  }
  void load_state(StateReader& in) override {
    in.get_vec(theta_);
    in.get_vec(eta_, theta_.size());
    in.get_bools(eta_known_);
    in.get_bools(pending_);
    in.get_vec(last_sign_, theta_.size());
    if (eta_known_.size() != theta_.size() || pending_.size() != theta_.size())
      in.bad("layer count");
  }

  std::vector<std::string> figure_names() const override {
    return {"sparsity", "theta", "mean_active_experts", "zero_expert_tokens"};
  }
  std::vector<double> figures() const override { return figures_; }
  std::string missing_input(const TokenBatch& batch) const override {
    return batch.full_logits ? "" : "full router logits (the source has top-k assignments only)";
  }

 private:
  void grow(int32_t layers) {
    if (static_cast<int32_t>(theta_.size()) >= layers) return;
    theta_.resize(static_cast<size_t>(layers), theta0_);
    eta_.resize(static_cast<size_t>(layers), 0.0);
    eta_known_.resize(static_cast<size_t>(layers), false);
    pending_.resize(static_cast<size_t>(layers), false);
    last_sign_.resize(static_cast<size_t>(layers), 0);
  }

  // Population std of every logit of the batch over the group. Collective.
  static double logit_std(const TokenBatch& batch, const Comm& group, int64_t T_group) {
    const int32_t ranks_here = batch.ranks_here();
    RankCursor rank_of(batch);
    const int64_t E = batch.num_experts;
    std::vector<double> part(static_cast<size_t>(ranks_here) * 2, 0.0);
    for (int64_t t = 0; t < batch.num_tokens; ++t) {
      double s = 0, q = 0;
      for (int64_t e = 0; e < E; ++e) {
        const double z = batch.logits[static_cast<size_t>(t * E + e)];
        s += z;
        q += z * z;
      }
      const size_t r = static_cast<size_t>(rank_of(t));
      part[r * 2] += s;
      part[r * 2 + 1] += q;
    }
    const auto tot = ordered_rank_sum(group, part, 2, ranks_here);
    const double n = static_cast<double>(T_group * E);
    if (n <= 0) return 0.0;
    const double mean = tot[0] / n;
    return std::sqrt(std::max(0.0, tot[1] / n - mean * mean));
  }

  // Selects the k*T largest logits group-wide into selected_; returns theta. Collective.
  double quantile_threshold(const TokenBatch& batch, const Comm& group, int64_t T_group) {
    const size_t n = batch.logits.size();
    if (bucket_.size() != n) bucket_.assign(n, 0);
    const int64_t quota[1] = {static_cast<int64_t>(k_) * T_group};
    select_top_per_bucket(group, 1, bucket_, batch.logits, quota, selected_);
    double min_sel = std::numeric_limits<double>::infinity(),
           max_unsel = -std::numeric_limits<double>::infinity();
    for (size_t i = 0; i < n; ++i) {
      const double z = batch.logits[i];
      if (selected_[i])
        min_sel = std::min(min_sel, z);
      else
        max_unsel = std::max(max_unsel, z);
    }
    min_sel = -group.max(-min_sel);
    max_unsel = group.max(max_unsel);
    if (!std::isfinite(max_unsel)) return min_sel;  // everything selected (k = E)
    if (!std::isfinite(min_sel)) return max_unsel;
    return 0.5 * (min_sel + max_unsel);
  }

  int32_t E_, k_;
  bool quantile_;
  bool warm_start_ = false;
  double eta_scale_, theta0_;
  std::vector<double> theta_, eta_;
  std::vector<bool> eta_known_, pending_;
  std::vector<int32_t> last_sign_;
  Buffers buf_;
  std::vector<int32_t> bucket_;
  std::vector<uint8_t> selected_;
  std::vector<double> figures_ = {0, 0, 0, 0};
};

const RouterRegistry::Registrar reg(
    "remoe",
    "ReLU routing replayed as ReLU(z - theta_l), 0..E experts per token, target sparsity 1 - k/E "
    "(mode=controller|quantile, warm_start=quantile|none, eta_scale=0.05, theta0=0)",
    [](const RouterSetup& s, ComponentArgs& a) -> std::unique_ptr<Router> {
      return std::make_unique<ReMoE>(s, a);
    });

}  // namespace
}  // namespace moe
