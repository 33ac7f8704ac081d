// Expert choice (Zhou et al. 2022), ROUTERS.md §8. Non-causal: collective over the EP group.
//
// S = softmax(z) per token, over all E experts. Every expert takes the C tokens with the largest
// S_{t,e} over the whole group of T = batch.global_tokens tokens, C = ceil(T * c / E) (computed
// like the capacity stage: ceil(x - 1e-9)), clamped to T. The selection is exact and never gathers
// tokens: moe::select_top_per_bucket over the (token, expert) pairs (bucket = expert, key = S,
// quota = C), equal keys to the globally first token. A token gets 0..E experts, listed by
// descending S (equal S: lower expert index first), each with weight S_{t,e} (no renormalisation).
//
// Knobs: c (default: the run's --top-k, finite and > 0): tokens per expert as a multiple of T/E,
// i.e. the mean number of experts per token. The default gives the same expert compute (and
// dispatch bytes) as the top-k token-choice routers it is compared with; the paper's EC-CF2 is c=2.
// [pick] C = ceil(T*c/E) (the paper writes T*c/E; ceil so that sum C >= T*c), clamped to T.
// [pick] Ties in S inside an expert go to the lower global token index; inside a token's list to
// the
//        lower expert index.
// [pick] Softmax in float with the harness's exp (relative error < 2e-7), the same on every
// process. Speed: the group-wide selection sees, per expert, only the entries of this process in
// the score bins (1/8 octave) from the one holding the process's C-th largest score up: a superset
// of the local top C, which is exact (an entry beaten by C local entries is beaten by at least C in
// the group), and it cuts the entries passed to the selection from T*E to about T*c. Note: the
// harness's capacity stage still applies after routing; with --capacity-factor F > 0 its C' =
// ceil(F*k*T/E) can drop expert-choice assignments when C' < C (run with F = 0 or F*k >= c).
//
// Figures (per step and layer, identical on every process):
//   capacity_per_expert    C, the tokens each expert takes (= its load)
//   zero_expert_tokens     fraction of the group's tokens that no expert took
//   max_experts_per_token  the largest number of experts any token got
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "harness/core/error.hpp"
#include "harness/core/select.hpp"
#include "harness/routing/router.hpp"
#include "harness/routing/topk.hpp"

namespace moe {
namespace {

// Scores are in [0, 1], so their bit patterns order like the values: bin = the exponent and 3
// mantissa bits, from 2^-32 (bin 0 also takes everything below) up to 1 (bin 256).
constexpr int32_t kBins = 257;
inline int32_t bin_of(float s) {
  const int32_t b = static_cast<int32_t>(std::bit_cast<uint32_t>(s) >> 20) - (95 << 3);
  return b < 0 ? 0 : (b >= kBins ? kBins - 1 : b);
}

class ExpertChoice final : public Router {
 public:
  ExpertChoice(const RouterSetup& setup, ComponentArgs& args)
      : c_(args.get_double("c", setup.top_k)) {
    if (!(c_ > 0) || !std::isfinite(c_))
      throw InputError("router-arg expert_choice.c: must be a finite number > 0 (got " +
                       std::to_string(c_) + ")");
  }

  std::string missing_input(const TokenBatch& batch) const override {
    return batch.full_logits ? "" : "full router logits (the source has top-k assignments only)";
  }

  std::vector<std::string> figure_names() const override {
    return {"capacity_per_expert", "zero_expert_tokens", "max_experts_per_token"};
  }
  std::vector<double> figures() const override { return figures_; }

  void route(const TokenBatch& batch, const Comm& group, RoutingPlan& plan) override {
    const int64_t n = batch.num_tokens;
    const int32_t E = batch.num_experts;
    const int64_t T = batch.global_tokens > 0 ? batch.global_tokens : group.sum(n);
    int64_t C = 0;
    if (T > 0)
      C = std::max<int64_t>(
          1, static_cast<int64_t>(std::ceil(c_ * static_cast<double>(T) / E - 1e-9)));
    C = std::min(C, T);

    // Softmax per token, in place in score_, and per expert a histogram of the scores in 1/8-octave
    // bins (bin_of below).
    score_.resize(static_cast<size_t>(n) * E);
    hist_.assign(static_cast<size_t>(E) * kBins, 0);
    for (int64_t t = 0; t < n; ++t) {
      const float* z = batch.logits.data() + t * E;
      float* s = score_.data() + t * E;
      const float m = *std::max_element(z, z + E);
      const float inv = 1.0f / sum_exp_shifted(z, E, m, s);
      for (int32_t e = 0; e < E; ++e) s[e] *= inv;
      for (int32_t e = 0; e < E; ++e) ++hist_[static_cast<size_t>(e) * kBins + bin_of(s[e])];
    }
    // Entries passed to the group selection: per expert, the scores in the bins from the one that
    // holds this process's C-th largest score up. That is a superset of the local top C, which
    // holds the expert's part of the group top C (an entry beaten by C local entries is beaten by
    // at least C in the group), so the selection stays exact; it sees about C entries per expert,
    // not n.
    first_bin_.assign(static_cast<size_t>(E), 0);
    for (int32_t e = 0; e < E; ++e) {
      const int32_t* h = hist_.data() + static_cast<size_t>(e) * kBins;
      int32_t bin = kBins;
      for (int64_t seen = 0; seen < C && bin > 0;) seen += h[--bin];
      first_bin_[e] = bin;
    }
    bucket_.clear();
    key_.clear();
    entry_.clear();
    for (int64_t t = 0; t < n; ++t)
      for (int32_t e = 0; e < E; ++e) {
        const int64_t i = t * E + e;
        if (bin_of(score_[i]) < first_bin_[e]) continue;
        bucket_.push_back(e);
        key_.push_back(score_[i]);
        entry_.push_back(i);
      }
    const std::vector<int64_t> quota(static_cast<size_t>(E), C);
    select_top_per_bucket(group, E, bucket_, key_, quota, selected_);

    // Plan: each token's selected experts by descending S (entry_ is in (token, expert) order).
    plan.reset(n, E, static_cast<int64_t>(entry_.size()));
    int64_t zero = 0, most = 0;
    size_t i = 0;
    for (int64_t t = 0; t < n; ++t) {
      const size_t begin = plan.expert.size();
      for (; i < entry_.size() && entry_[i] / E == t; ++i) {
        if (!selected_[i]) continue;
        const int32_t e = static_cast<int32_t>(entry_[i] % E);
        const float w = score_[entry_[i]];
        // Insertion by (S desc, expert asc); experts arrive in ascending order.
        plan.expert.push_back(e);
        plan.weight.push_back(w);
        for (size_t j = plan.expert.size() - 1; j > begin && plan.weight[j - 1] < w; --j) {
          std::swap(plan.expert[j], plan.expert[j - 1]);
          std::swap(plan.weight[j], plan.weight[j - 1]);
        }
      }
      const int64_t count = static_cast<int64_t>(plan.expert.size() - begin);
      plan.offsets[t + 1] = static_cast<int64_t>(plan.expert.size());
      zero += count == 0;
      most = std::max(most, count);
    }
    zero = group.sum(zero);
    most = group.max(most);
    figures_ = {static_cast<double>(C),
                T > 0 ? static_cast<double>(zero) / static_cast<double>(T) : 0.0,
                static_cast<double>(most)};
  }

 private:
  double c_;
  std::vector<double> figures_;
  // Scratch reused across calls.
  std::vector<float> score_;
  std::vector<int32_t> hist_, first_bin_;
  std::vector<int32_t> bucket_;
  std::vector<float> key_;
  std::vector<int64_t> entry_;
  std::vector<uint8_t> selected_;
};

const RouterRegistry::Registrar reg("expert_choice",
                                    "expert choice: each expert takes its top C = ceil(T*c/E) "
                                    "tokens by softmax score over the EP group, 0..E experts "
                                    "per token (c = top_k, matched compute; EC-CF2 is c=2)",
                                    [](const RouterSetup& s,
                                       ComponentArgs& a) -> std::unique_ptr<Router> {
                                      return std::make_unique<ExpertChoice>(s, a);
                                    });

}  // namespace
}  // namespace moe
