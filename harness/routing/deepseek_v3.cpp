// DeepSeek-V3 routing: sigmoid scores, loss-free balancing bias, group (node) limit. ROUTERS.md §2.
//
// Per token t (logits z_t over E experts) at layer l:
//   s_i  = sigmoid(z_i)                       affinity, used for the combine weights
//   s'_i = s_i + b_{l,i}                      selection score; b_l is this layer's bias (E floats)
//   Group limit: the experts form G contiguous groups of E/G. A group's score is the sum of its two
//   largest s' (its largest s' when a group has one expert; group_score=topk_per_group: of its
//   k/M largest). The M best groups are kept (ties to the
//   lower group index), the others are masked; M >= G disables the limit.
//   Selection: the k largest s' among the kept experts, best first, ties to the lower index.
//   Weights: g_i = routed_scaling_factor * s_i / (sum over the selected s_j + 1e-20), with the
//   unbiased s: the bias never enters the combine weights (the 1e-20 guard follows the released V3
//   model code [mem]; it changes nothing unless every selected s underflows).
// Bias update, in end_step() (once per step, after every layer was routed):
//   c_i = tokens of the whole EP group that selected expert i at that layer in that step (integer,
//   Comm::sum), c_mean = sum_i c_i / E, b_i += gamma * sign(c_mean - c_i) (sign(0) = 0; the
//   comparison is made exactly in integers). b starts at 0 and is stored in float as in the model.
//   Layers not routed in a step keep their bias.
//
// Knobs (all validated in the constructor):
//   gamma                  bias update speed, >= 0; default 0.001 (V3). 0 freezes b at 0.
//   groups                 G, must divide E; default the topology's node count when it divides E,
//                          else 1 (one group per node, as V3 maps groups to nodes).
//   topk_group             M >= 1; default max(1, G/2), [pick] raised to ceil(k / (E/G)) when fewer
//                          groups could not hold k experts. An explicit M with M < G must satisfy
//                          M * (E/G) >= k.
//   routed_scaling_factor  > 0; default 2.5 (V3).
//   group_score            top2 (default, the V3 release: a group's score is the sum of its two
//                          largest s') | topk_per_group (Megatron-Core's group_limited_topk: the
//                          sum of its top_k / topk_group largest s'; needs top_k >= topk_group).
//                          The two agree for V3's shape (k = 8, M = 4) and differ elsewhere.
//   bias_counts            selected (default: c_i counts the selections before capacity, as the V3
//                          paper describes the update) | kept (c_i counts the assignments the
//                          capacity stage kept, as Megatron-Core does: its local_tokens_per_expert
//                          is summed from the routing map after token dropping). Equal when
//                          nothing is dropped.
//
// [pick]s: s' ties (including ties created by float rounding of the sigmoid) go to the lower
// expert index, group-score ties to the lower group index; the sigmoid is computed in float (as the
// model does) with a polynomial exp (relative error < 3e-7). So with b = 0 and no group limit the
// selection equals sigmoid_topk's (top-k of z) except where the float sigmoid of two distinct
// logits rounds to the same value.
//
// Figures (per step and layer, identical on every process):
//   max_vio                (max_i c_i - c_mean) / c_mean of this step's counts at this layer,
//                          before the bias update (0 when no token was routed)
//   bias_abs_mean          mean_i |b_i| of the bias used for this selection (before the update)
//   groups_per_token_mean  distinct groups among each token's selected experts, mean over tokens
//                          (with one group per node: nodes each token is sent to)
//   score_mass_removed     mean over tokens of [sum of the top-k s' without the group mask] minus
//                          [sum of the selected s' with the mask], >= 0: the selection quality the
//                          group limit costs (0 when the limit is off). Summed per EP rank in token
//                          order, then over ranks in rank order (ordered_rank_sum).
//
// Needs full logits. Collective: one Comm::sum of E + 2 int64 per route(), plus one
// ordered_rank_sum when the group limit is on.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "harness/core/error.hpp"
#include "harness/core/select.hpp"
#include "harness/routing/router.hpp"
#include "harness/routing/simd_math.hpp"
#include "harness/routing/topk.hpp"
#include "harness/routing/topk_rows.hpp"

namespace moe {
namespace {

// sigmoid(x) = 1 / (1 + e^-x) for x >= 0, e^x / (1 + e^x) otherwise (exp of a non-positive value).
inline float sigmoidf(float x) {
  const float e = exp_nonpositive(-std::fabs(x));
  const float r = 1.0f / (1.0f + e);
  return x >= 0.0f ? r : e * r;
}

// The same formula on 8 lanes with GCC vector extensions (the compiler does not if-convert the
// scalar form under -ftrapping-math). No vector crosses a function boundary (no ABI concerns).
using simd::vf;

// out[0..8) = sigmoid(z[0..8)) + b[0..8).
[[gnu::always_inline]] inline void biased_sigmoid8(const float* z, const float* b, float* out) {
  vf x, bias;
  __builtin_memcpy(&x, z, sizeof x);
  __builtin_memcpy(&bias, b, sizeof bias);
  const vf e = simd::exp_nonpositive8(x < 0.0f ? x : -x);  // exp(-|x|)
  const vf q = 1.0f / (1.0f + e);
  const vf y = (x >= 0.0f ? q : e * q) + bias;
  __builtin_memcpy(out, &y, sizeof y);
}

// out[t*E + e] = sigmoid(z[t*E + e]) + b[e] for n rows.
__attribute__((target_clones("arch=x86-64-v4", "avx2", "default"))) void biased_sigmoid_rows(
    const float* z, int64_t n, int32_t E, const float* b, float* out) {
  for (int64_t t = 0; t < n; ++t) {
    const float* zr = z + t * E;
    float* o = out + t * E;
    int32_t e = 0;
    for (; e + 8 <= E; e += 8) biased_sigmoid8(zr + e, b + e, o + e);
    for (; e < E; ++e) o[e] = sigmoidf(zr[e]) + b[e];
  }
}

class DeepSeekV3 final : public Router {
 public:
  DeepSeekV3(const RouterSetup& setup, ComponentArgs& args)
      : E_(setup.num_experts), k_(setup.top_k) {
    if (E_ < 1 || k_ < 1 || k_ > E_)
      throw InputError("router deepseek_v3: needs 1 <= top_k <= experts (got k=" +
                       std::to_string(k_) + ", E=" + std::to_string(E_) + ")");
    const double gamma = args.get_double("gamma", 0.001);
    if (!(gamma >= 0))
      throw InputError("router-arg deepseek_v3.gamma: must be >= 0 (got " + std::to_string(gamma) +
                       ")");
    gamma_ = static_cast<float>(gamma);
    const int32_t nodes = setup.topology.nodes;
    const int64_t default_groups = (nodes >= 1 && E_ % nodes == 0) ? nodes : 1;
    const int64_t groups = args.get_int("groups", default_groups);
    if (groups < 1 || groups > E_ || E_ % groups != 0)
      throw InputError("router-arg deepseek_v3.groups: must divide the number of experts " +
                       std::to_string(E_) + " (got " + std::to_string(groups) + ")");
    G_ = static_cast<int32_t>(groups);
    gs_ = E_ / G_;
    const bool m_set = args.values().count("topk_group") > 0;
    const int32_t m_needed = (k_ + gs_ - 1) / gs_;  // fewest groups that hold k experts
    const int64_t m = args.get_int("topk_group", std::max({1, G_ / 2, m_needed}));
    if (m < 1)
      throw InputError("router-arg deepseek_v3.topk_group: must be >= 1 (got " + std::to_string(m) +
                       ")");
    if (m_set && m < G_ && m < m_needed)
      throw InputError("router-arg deepseek_v3.topk_group: " + std::to_string(m) + " groups of " +
                       std::to_string(gs_) + " experts cannot hold top_k=" + std::to_string(k_) +
                       " (need >= " + std::to_string(m_needed) + ")");
    M_ = static_cast<int32_t>(std::min<int64_t>(m, G_));
    limited_ = M_ < G_;
    const double rsf = args.get_double("routed_scaling_factor", 2.5);
    if (!(rsf > 0))
      throw InputError("router-arg deepseek_v3.routed_scaling_factor: must be > 0 (got " +
                       std::to_string(rsf) + ")");
    rsf_ = static_cast<float>(rsf);
    const std::string group_score = args.get_string("group_score", "top2");
    if (group_score == "top2") {
      group_n_ = 2;
    } else if (group_score == "topk_per_group") {
      group_n_ = k_ / M_;
      if (limited_ && (group_n_ < 1 || group_n_ > gs_))
        throw InputError(
            "router-arg deepseek_v3.group_score=topk_per_group: top_k / topk_group = " +
            std::to_string(k_) + " / " + std::to_string(M_) +
            " must be in [1, experts per group = " + std::to_string(gs_) + "]");
    } else {
      throw InputError("router-arg deepseek_v3.group_score: '" + group_score +
                       "' is not top2 or topk_per_group");
    }
    const std::string bias_counts = args.get_string("bias_counts", "selected");
    if (bias_counts != "selected" && bias_counts != "kept")
      throw InputError("router-arg deepseek_v3.bias_counts: '" + bias_counts +
                       "' is not selected or kept");
    count_kept_ = bias_counts == "kept";
    const size_t L = static_cast<size_t>(std::max(1, setup.num_layers));
    bias_.assign(L, std::vector<float>(static_cast<size_t>(E_), 0.0f));
    counts_.assign(L, std::vector<int64_t>(static_cast<size_t>(E_), 0));
    routed_.assign(L, 0);
  }

  std::string missing_input(const TokenBatch& batch) const override {
    return batch.full_logits ? "" : "full router logits (the source has top-k assignments only)";
  }

  std::vector<std::string> figure_names() const override {
    return {"max_vio", "bias_abs_mean", "groups_per_token_mean", "score_mass_removed"};
  }
  std::vector<double> figures() const override { return figures_; }

  // route() = begin_chunks + route_chunk(the whole batch) + finish_chunks; the driver may also
  // feed a large batch in chunks of EP ranks (the selection is per token; the statistics are summed
  // over the chunks, then over the group).
  bool chunkable() const override { return true; }

  void route(const TokenBatch& batch, const Comm& group, RoutingPlan& plan) override {
    begin_chunks(batch.layer, batch.rank_base(), batch.ranks_here());
    route_chunk(batch, plan);
    finish_chunks(group);
  }

  void begin_chunks(int32_t layer, int32_t first_rank, int32_t ranks) override {
    if (layer < 0) throw Error("router deepseek_v3: negative layer");
    if (static_cast<size_t>(layer) >=
        bias_.size()) {  // more layers than announced: they start unbiased too
      bias_.resize(static_cast<size_t>(layer) + 1,
                   std::vector<float>(static_cast<size_t>(E_), 0.0f));
      counts_.resize(static_cast<size_t>(layer) + 1,
                     std::vector<int64_t>(static_cast<size_t>(E_), 0));
      routed_.resize(static_cast<size_t>(layer) + 1, 0);
    }
    layer_ = layer;
    first_rank_ = first_rank;
    // Stats: [E] selections per expert, distinct groups summed over tokens, tokens; and the
    // per-EP-rank partial sums of score_mass_removed.
    stats_.assign(static_cast<size_t>(E_) + 2, 0);
    removed_.assign(static_cast<size_t>(limited_ ? ranks : 0), 0.0);
  }

  void route_chunk(const TokenBatch& batch, RoutingPlan& plan) override {
    if (batch.num_experts != E_)
      throw Error("router deepseek_v3: batch has " + std::to_string(batch.num_experts) +
                  " experts, router set up for " + std::to_string(E_));
    if (batch.layer != layer_)
      throw Error("router deepseek_v3: route_chunk for another layer than begin_chunks");
    const float* b = bias_[static_cast<size_t>(layer_)].data();
    const int64_t T = batch.num_tokens;
    const int32_t E = E_, k = k_;
    plan.reset(T, E, T * k);
    plan.expert.resize(static_cast<size_t>(T) * k);
    plan.weight.resize(static_cast<size_t>(T) * k);
    for (int64_t t = 0; t < T; ++t) plan.offsets[t + 1] = (t + 1) * k;

    RankCursor rank_of(batch);
    const int32_t rank_offset =
        batch.rank_base() - first_rank_;  // this chunk's first rank among the hosted ones
    std::vector<int64_t>& stats = stats_;
    stamp_.assign(static_cast<size_t>(G_), -1);
    const int64_t chunk = std::max<int64_t>(8, (16384 / E) / 8 * 8);  // 64 KiB of scores per chunk
    scores_.resize(static_cast<size_t>(std::min(chunk, std::max<int64_t>(T, 1)) * E));
    if (limited_) {
      free_idx_.resize(static_cast<size_t>(chunk * k));
      free_val_.resize(static_cast<size_t>(chunk * k));
      kept_.resize(static_cast<size_t>(chunk * M_));
      compact_.resize(static_cast<size_t>(chunk * M_ * gs_));
    }
    gscore_.resize(static_cast<size_t>(G_));
    gsort_.resize(static_cast<size_t>(gs_));
    gval2_.resize(static_cast<size_t>(G_));
    gidx_.resize(static_cast<size_t>(M_));
    gval_.resize(static_cast<size_t>(M_));
    keep_.resize(static_cast<size_t>(G_));

    for (int64_t t0 = 0; t0 < T; t0 += chunk) {
      const int64_t n = std::min(chunk, T - t0);
      const float* z = batch.logits.data() + t0 * E;
      float* sb = scores_.data();
      int32_t* sel = plan.expert.data() + t0 * k;
      float* val = plan.weight.data() + t0 * k;  // selected s' first, the weights below
      biased_sigmoid_rows(z, n, E, b, sb);
      if (limited_) {
        // The unmasked top-k, for score_mass_removed only.
        topk_rows(sb, n, E, k, TopKWeights::logits, free_idx_.data(), free_val_.data());
        const int32_t W = M_ * gs_;
        for (int64_t t = 0; t < n; ++t) {
          const float* row = sb + t * E;
          // Group scores: the sum of the two largest s' (branch-free running top-2), the groups
          // interleaved so that their independent chains overlap.
          float* top1 = gscore_.data();
          float* top2 = gval2_.data();
          for (int32_t g = 0; g < G_; ++g) {
            top1[g] = row[g * gs_];
            top2[g] = -std::numeric_limits<float>::infinity();
          }
          for (int32_t i = 1; i < gs_; ++i)
            for (int32_t g = 0; g < G_; ++g) {
              const float x = row[g * gs_ + i];
              top2[g] = std::max(top2[g], std::min(top1[g], x));
              top1[g] = std::max(top1[g], x);
            }
          if (group_n_ == 2) {
            if (gs_ > 1)
              for (int32_t g = 0; g < G_; ++g) top1[g] += top2[g];
          } else if (group_n_ > 2) {  // topk_per_group: the sum of the n largest, best first
            for (int32_t g = 0; g < G_; ++g) {
              float* v = gsort_.data();
              std::copy(row + g * gs_, row + (g + 1) * gs_, v);
              std::partial_sort(v, v + group_n_, v + gs_, std::greater<float>());
              float sum = v[0];
              for (int32_t i = 1; i < group_n_; ++i) sum += v[i];
              top1[g] = sum;
            }
          }
          // Keep the M best groups, ties to the lower group index.
          if (G_ <= 32) {
            for (int32_t g = 0; g < G_; ++g) {
              const float x = gscore_[g];
              int32_t better = 0;
              for (int32_t h = 0; h < G_; ++h)
                better += (gscore_[h] > x) | ((gscore_[h] == x) & (h < g));
              keep_[g] = better < M_ ? 1 : 0;
            }
          } else {
            topk_indices(gscore_.data(), G_, M_, gidx_.data(), gval_.data());
            std::fill(keep_.begin(), keep_.end(), uint8_t{0});
            for (int32_t j = 0; j < M_; ++j) keep_[gidx_[j]] = 1;
          }
          // The kept groups side by side in increasing order (so index order, and with it the
          // tie order, is preserved): the top-k of this narrower row is the masked top-k.
          int32_t* kept = kept_.data() + t * M_;
          float* crow = compact_.data() + t * W;
          int32_t m = 0;
          for (int32_t g = 0; g < G_; ++g)
            if (keep_[g]) {
              kept[m] = g;
              std::copy(row + g * gs_, row + (g + 1) * gs_, crow + m * gs_);
              ++m;
            }
        }
        topk_rows(compact_.data(), n, W, k, TopKWeights::logits, sel, val);
        for (int64_t t = 0; t < n; ++t)
          for (int32_t j = 0; j < k; ++j) {
            int32_t& e = sel[t * k + j];
            e = kept_[t * M_ + e / gs_] * gs_ + e % gs_;
          }
      } else {
        topk_rows(sb, n, E, k, TopKWeights::logits, sel, val);
      }
      for (int64_t t = 0; t < n; ++t) {
        const int32_t* e_t = sel + t * k;
        float* w = val + t * k;
        if (limited_) {
          double all = 0, kept = 0;
          for (int32_t j = 0; j < k; ++j) {
            all += free_val_[t * k + j];
            kept += w[j];
          }
          removed_[static_cast<size_t>(rank_offset + rank_of(t0 + t))] += all - kept;
        }
        const float* zr = z + t * E;
        float norm = 0.f;
        for (int32_t j = 0; j < k; ++j) {
          w[j] = sigmoidf(zr[e_t[j]]);
          norm += w[j];
        }
        const float f = rsf_ / (norm + 1e-20f);
        for (int32_t j = 0; j < k; ++j) w[j] *= f;
        int64_t distinct = 0;
        const int64_t token = t0 + t;
        for (int32_t j = 0; j < k; ++j) {
          ++stats[e_t[j]];
          const int32_t g = e_t[j] / gs_;
          if (stamp_[g] != token) {
            stamp_[g] = token;
            ++distinct;
          }
        }
        stats[E] += distinct;
      }
    }
    stats[E + 1] += T;
  }

  void finish_chunks(const Comm& group) override {
    const int32_t E = E_;
    std::vector<int64_t>& stats = stats_;
    const size_t layer = static_cast<size_t>(layer_);
    group.sum(stats);

    // Counts for the bias update at end_step, and the figures.
    auto& c = counts_[layer];
    std::copy(stats.begin(), stats.begin() + E, c.begin());
    routed_[layer] = 1;
    const int64_t tokens = stats[E + 1];
    int64_t total = 0, cmax = 0;
    for (int64_t x : c) {
      total += x;
      cmax = std::max(cmax, x);
    }
    const double mean = static_cast<double>(total) / E;
    double babs = 0;
    for (float x : bias_[layer]) babs += std::fabs(static_cast<double>(x));
    double mass = 0;
    if (limited_)
      mass = ordered_rank_sum(group, removed_, 1, static_cast<int32_t>(removed_.size()))[0];
    figures_ = {mean > 0 ? (static_cast<double>(cmax) - mean) / mean : 0.0, babs / E,
                tokens > 0 ? static_cast<double>(stats[E]) / static_cast<double>(tokens) : 0.0,
                tokens > 0 ? mass / static_cast<double>(tokens) : 0.0};
  }

  void observe_kept(int32_t layer, const std::vector<int64_t>& expert_load) override {
    if (!count_kept_ || layer < 0 || static_cast<size_t>(layer) >= counts_.size()) return;
    if (expert_load.size() != static_cast<size_t>(E_))
      throw Error("router deepseek_v3: kept loads of another expert count");
    counts_[static_cast<size_t>(layer)] = expert_load;
  }

  void end_step(const Comm&) override {
    for (size_t l = 0; l < bias_.size(); ++l) {
      if (!routed_[l]) continue;
      routed_[l] = 0;
      const auto& c = counts_[l];
      int64_t total = 0;
      for (int64_t x : c) total += x;
      auto& b = bias_[l];
      for (int32_t i = 0; i < E_; ++i) {
        // sign(c_mean - c_i) with c_mean = total / E, compared exactly: total vs E * c_i.
        const int64_t scaled = static_cast<int64_t>(E_) * c[i];
        if (total > scaled)
          b[i] += gamma_;
        else if (total < scaled)
          b[i] -= gamma_;
      }
    }
  }

  void save_state(StateWriter& out) const override {
    out.put(static_cast<uint64_t>(bias_.size()));
    for (size_t l = 0; l < bias_.size(); ++l) {
      out.put_vec(bias_[l]);
      out.put_vec(counts_[l]);
    }
    out.put_vec(routed_);
  }
  void load_state(StateReader& in) override {
    if (in.get<uint64_t>() != bias_.size()) in.bad("layer count");
    for (size_t l = 0; l < bias_.size(); ++l) {
      in.get_vec(bias_[l], bias_[l].size());
      in.get_vec(counts_[l], counts_[l].size());
    }
    in.get_vec(routed_, routed_.size());
  }

 private:
  int32_t E_, k_;
  int32_t G_ = 1, gs_ = 1, M_ = 1;
  bool limited_ = false;
  int32_t group_n_ = 2;      // a group's score sums its group_n_ largest s'
  bool count_kept_ = false;  // bias_counts=kept
  float gamma_ = 0, rsf_ = 2.5f;
  std::vector<std::vector<float>> bias_;  // [layer][E]
  std::vector<std::vector<int64_t>>
      counts_;                   // [layer][E] global counts of the last route() this step
  std::vector<uint8_t> routed_;  // [layer] routed since the last end_step
  std::vector<double> figures_ = {0, 0, 0, 0};
  // The route in progress (begin_chunks .. finish_chunks).
  int32_t layer_ = 0, first_rank_ = 0;
  std::vector<int64_t> stats_;
  std::vector<double> removed_;
  // Scratch, kept between calls.
  std::vector<float> scores_, compact_, free_val_, gscore_, gval2_, gval_, gsort_;
  std::vector<int32_t> free_idx_, gidx_, kept_;
  std::vector<int64_t> stamp_;
  std::vector<uint8_t> keep_;
};

const RouterRegistry::Registrar reg("deepseek_v3",
                                    "DeepSeek-V3: sigmoid scores + per-layer loss-free balancing "
                                    "bias (selection only) + group limit "
                                    "(gamma=0.001, groups=nodes, topk_group=groups/2, "
                                    "routed_scaling_factor=2.5, group_score=top2|topk_per_group, "
                                    "bias_counts=selected|kept)",
                                    [](const RouterSetup& s,
                                       ComponentArgs& a) -> std::unique_ptr<Router> {
                                      return std::make_unique<DeepSeekV3>(s, a);
                                    });

}  // namespace
}  // namespace moe
