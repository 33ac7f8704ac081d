// hot_rank: one source rank's tokens are skewed to a few experts; the other ranks are balanced.
//
// Model: the tokens of EP rank `rank` (where a global token falls in the step's rank layout) get
// Plackett-Luce logits log(f / H) for the H hot experts 0..H-1 (mod E, shifted by `first`) and
// log((1 - f) / (E - H)) for the others, plus Gumbel noise; every other rank's tokens get Gumbel
// noise only (workloads/synthetic.hpp). All layers and steps alike. A rank whose batch is one
// topic -- its dispatch row concentrates on the ranks hosting the hot experts.
// Statistic: a token of rank `rank` picks a hot expert first with probability f exactly; any other
// token picks each expert first with probability 1 / E.
// Knobs: rank (default 0, in [0, ep_size)), hot = H (default top_k), fraction = f (default 0.9),
// first (default 0).
#include <algorithm>

#include "harness/core/error.hpp"
#include "harness/core/rng.hpp"
#include "workloads/synthetic.hpp"
#include "workloads/workload.hpp"

namespace moe {
namespace {

class HotRank final : public Workload {
 public:
  HotRank(const WorkloadSetup& s, ComponentArgs& a) : Workload(s) {
    const synth::HotKnobs h = synth::read_hot_knobs("hot_rank", a, s.num_experts, s.top_k, 0.9);
    rank_ = a.get_int("rank", 0);
    if (rank_ < 0 || rank_ >= s.ep_size)
      throw InputError(synth::knob_error("hot_rank", a, "rank", "must be in [0, ep-size) = [0, " + std::to_string(s.ep_size) + ")"));
    const int64_t first = a.get_int("first", 0);
    if (first < 0 || first >= s.num_experts)
      throw InputError(synth::knob_error("hot_rank", a, "first", "must be an expert id in [0, experts)"));
    bias_ = synth::hot_bias(synth::block_mask(s.num_experts, first, h.hot), h.fraction);
  }

 private:
  void fill_logits(TokenBatch& b) override {
    const int32_t E = b.num_experts;
    const uint64_t key = rng::key(setup_.seed, 0x68726bu, static_cast<uint64_t>(b.step), static_cast<uint64_t>(b.layer));
    const std::vector<int64_t>& lay = layout(b.step);
    // The hot rank's tokens, clipped to this batch: [lo, hi) in batch indices.
    const int64_t lo = std::clamp<int64_t>(lay[static_cast<size_t>(rank_)] - b.first_token, 0, b.num_tokens);
    const int64_t hi = std::clamp<int64_t>(lay[static_cast<size_t>(rank_) + 1] - b.first_token, 0, b.num_tokens);
    float* z = b.logits.data();
    synth::gumbel_rows(key, b.first_token, lo, E, nullptr, z);
    synth::gumbel_rows(key, b.first_token + lo, hi - lo, E, bias_.data(), z + lo * E);
    synth::gumbel_rows(key, b.first_token + hi, b.num_tokens - hi, E, nullptr, z + hi * E);
  }
  int64_t rank_ = 0;
  std::vector<float> bias_;
};

const WorkloadRegistry::Registrar reg(
    "hot_rank", "one source rank's tokens skewed to a few hot experts, the others balanced (rank, hot, fraction, first)",
    [](const WorkloadSetup& s, ComponentArgs& a) -> std::unique_ptr<Workload> { return std::make_unique<HotRank>(s, a); });

}  // namespace
}  // namespace moe
