// spread_hot: hot experts spread evenly over the expert ids (and so over the ranks).
//
// Model: as hot_experts, but the H hot experts are floor(i * E / H), i = 0..H-1: one per stretch
// of E / H ids, so contiguous placement puts them on different ranks (at most ceil(H / R) per
// rank). The control for hot_experts: the same skew of expert loads, spread so that placement has
// nothing to fix. Plackett-Luce logits: log(f / H) hot, log((1 - f) / (E - H)) cold, plus Gumbel
// noise (workloads/synthetic.hpp); the same hot set on every step and layer.
// Statistic: a token's first choice is a hot expert with probability f exactly, each hot expert
// f / H, each cold one (1 - f) / (E - H).
// Knobs: hot = H (default top_k), fraction = f (default 0.5).
#include "harness/core/error.hpp"
#include "harness/core/rng.hpp"
#include "workloads/synthetic.hpp"
#include "workloads/workload.hpp"

namespace moe {
namespace {

class SpreadHot final : public Workload {
 public:
  SpreadHot(const WorkloadSetup& s, ComponentArgs& a) : Workload(s) {
    const synth::HotKnobs h = synth::read_hot_knobs("spread_hot", a, s.num_experts, s.top_k, 0.5);
    std::vector<uint8_t> hot(static_cast<size_t>(s.num_experts), 0);
    for (int64_t i = 0; i < h.hot; ++i) hot[static_cast<size_t>(i * s.num_experts / h.hot)] = 1;
    bias_ = synth::hot_bias(hot, h.fraction);
  }

 private:
  void fill_logits(TokenBatch& b) override {
    const uint64_t key = rng::key(setup_.seed, 0x737068u, static_cast<uint64_t>(b.step), static_cast<uint64_t>(b.layer));
    synth::gumbel_rows(key, b.first_token, b.num_tokens, b.num_experts, bias_.data(), b.logits.data());
  }
  std::vector<float> bias_;
};

const WorkloadRegistry::Registrar reg(
    "spread_hot", "hot experts evenly strided over the expert ids, so over the ranks (hot, fraction)",
    [](const WorkloadSetup& s, ComponentArgs& a) -> std::unique_ptr<Workload> { return std::make_unique<SpreadHot>(s, a); });

}  // namespace
}  // namespace moe
