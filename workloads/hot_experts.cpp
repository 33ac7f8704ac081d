// hot_experts: a block of hot experts takes a fixed fraction of the tokens.
//
// Model: the H hot experts are the contiguous ids first, first + 1, ..., first + H - 1 (mod E) --
// under contiguous placement they sit on the same few ranks, the case placement must fix. Logits
// are Plackett-Luce: log(f / H) for a hot expert, log((1 - f) / (E - H)) for a cold one, plus
// Gumbel(0, 1) noise from the counter-based RNG (workloads/synthetic.hpp). The same hot set on
// every step and layer.
// Statistic: a token's first choice (argmax of the logits) is a hot expert with probability f
// exactly (Gumbel-max), each hot expert with f / H, each cold one with (1 - f) / (E - H); its
// top-k is a draw without replacement in proportion to those weights.
// Knobs: hot = H (default top_k), fraction = f (default 0.5), first (default 0).
#include "harness/core/error.hpp"
#include "harness/core/rng.hpp"
#include "workloads/synthetic.hpp"
#include "workloads/workload.hpp"

namespace moe {
namespace {

class HotExperts final : public Workload {
 public:
  HotExperts(const WorkloadSetup& s, ComponentArgs& a) : Workload(s) {
    const synth::HotKnobs h = synth::read_hot_knobs("hot_experts", a, s.num_experts, s.top_k, 0.5);
    const int64_t first = a.get_int("first", 0);
    if (first < 0 || first >= s.num_experts)
      throw InputError(synth::knob_error("hot_experts", a, "first", "must be an expert id in [0, experts)"));
    bias_ = synth::hot_bias(synth::block_mask(s.num_experts, first, h.hot), h.fraction);
  }

 private:
  void fill_logits(TokenBatch& b) override {
    const uint64_t key = rng::key(setup_.seed, 0x686f74u, static_cast<uint64_t>(b.step), static_cast<uint64_t>(b.layer));
    synth::gumbel_rows(key, b.first_token, b.num_tokens, b.num_experts, bias_.data(), b.logits.data());
  }
  std::vector<float> bias_;
};

const WorkloadRegistry::Registrar reg(
    "hot_experts", "a contiguous block of hot experts takes a fraction of first choices (hot, fraction, first)",
    [](const WorkloadSetup& s, ComponentArgs& a) -> std::unique_ptr<Workload> { return std::make_unique<HotExperts>(s, a); });

}  // namespace
}  // namespace moe
