// burst: mostly balanced steps, with an occasional extreme one.
//
// Model: step s is a burst step when U(seed, s) < p (U uniform from the counter-based RNG, so a
// function of seed and step only, the same for every layer and process). A burst step makes the
// contiguous block of H experts starting at a seeded random id per step (mod E) hot: Plackett-Luce
// logits log(f / H) hot, log((1 - f) / (E - H)) cold, plus Gumbel noise
// (workloads/synthetic.hpp). Other steps have Gumbel noise only (every expert equally likely).
// Statistic: a fraction p of steps are bursts in expectation; in a burst step a token's first
// choice is in the hot block with probability f exactly; otherwise each expert has 1 / E.
// Knobs: probability = p (default 0.1, in [0, 1]), hot = H (default top_k), fraction = f (default 0.9).
#include "harness/core/error.hpp"
#include "harness/core/rng.hpp"
#include "workloads/synthetic.hpp"
#include "workloads/workload.hpp"

namespace moe {
namespace {

class Burst final : public Workload {
 public:
  Burst(const WorkloadSetup& s, ComponentArgs& a) : Workload(s) {
    knobs_ = synth::read_hot_knobs("burst", a, s.num_experts, s.top_k, 0.9);
    p_ = a.get_double("probability", 0.1);
    if (!(p_ >= 0 && p_ <= 1)) throw InputError(synth::knob_error("burst", a, "probability", "must be in [0, 1]"));
  }

 private:
  void fill_logits(TokenBatch& b) override {
    const uint64_t step_key = rng::key(setup_.seed, 0x627573u);
    const bool burst = rng::uniform(step_key, 2 * static_cast<uint64_t>(b.step)) < p_;
    if (burst && bias_step_ != b.step) {
      const auto first = static_cast<int64_t>(rng::below(step_key, 2 * static_cast<uint64_t>(b.step) + 1, static_cast<uint64_t>(b.num_experts)));
      bias_ = synth::hot_bias(synth::block_mask(b.num_experts, first, knobs_.hot), knobs_.fraction);
      bias_step_ = b.step;
    }
    const uint64_t key = rng::key(setup_.seed, 0x627574u, static_cast<uint64_t>(b.step), static_cast<uint64_t>(b.layer));
    synth::gumbel_rows(key, b.first_token, b.num_tokens, b.num_experts, burst ? bias_.data() : nullptr, b.logits.data());
  }
  synth::HotKnobs knobs_;
  double p_ = 0.1;
  int32_t bias_step_ = -1;
  std::vector<float> bias_;
};

const WorkloadRegistry::Registrar reg(
    "burst", "balanced steps with an occasional burst step where a hot block takes most tokens (probability, hot, fraction)",
    [](const WorkloadSetup& s, ComponentArgs& a) -> std::unique_ptr<Workload> { return std::make_unique<Burst>(s, a); });

}  // namespace
}  // namespace moe
