// rotating_hotspot: the hot set moves every step.
//
// Model: at step s the H hot experts are the contiguous ids (s * stride + i) mod E, i = 0..H-1;
// Plackett-Luce logits log(f / H) hot, log((1 - f) / (E - H)) cold, plus Gumbel noise
// (workloads/synthetic.hpp); every layer of a step shares the hot set. With stride = H (the
// default) consecutive steps' hot sets do not overlap: any placement fitted to one step is wrong
// for the next, the case for re-placement cost against its gain.
// Statistic: at step s a token's first choice is in that step's hot set with probability f
// exactly (each hot expert f / H, each cold one (1 - f) / (E - H)).
// Knobs: hot = H (default top_k), fraction = f (default 0.5), stride (default H, >= 1).
#include "harness/core/error.hpp"
#include "harness/core/rng.hpp"
#include "workloads/synthetic.hpp"
#include "workloads/workload.hpp"

namespace moe {
namespace {

class RotatingHotspot final : public Workload {
 public:
  RotatingHotspot(const WorkloadSetup& s, ComponentArgs& a) : Workload(s) {
    knobs_ = synth::read_hot_knobs("rotating_hotspot", a, s.num_experts, s.top_k, 0.5);
    stride_ = a.get_int("stride", knobs_.hot);
    if (stride_ < 1) throw InputError(synth::knob_error("rotating_hotspot", a, "stride", "must be >= 1"));
  }

 private:
  void fill_logits(TokenBatch& b) override {
    if (bias_step_ != b.step) {
      const int64_t first = (static_cast<int64_t>(b.step) % b.num_experts) * (stride_ % b.num_experts);
      bias_ = synth::hot_bias(synth::block_mask(b.num_experts, first, knobs_.hot), knobs_.fraction);
      bias_step_ = b.step;
    }
    const uint64_t key = rng::key(setup_.seed, 0x726f74u, static_cast<uint64_t>(b.step), static_cast<uint64_t>(b.layer));
    synth::gumbel_rows(key, b.first_token, b.num_tokens, b.num_experts, bias_.data(), b.logits.data());
  }
  synth::HotKnobs knobs_;
  int64_t stride_ = 1;
  int32_t bias_step_ = -1;
  std::vector<float> bias_;
};

const WorkloadRegistry::Registrar reg(
    "rotating_hotspot", "a block of hot experts that moves by `stride` ids every step (hot, fraction, stride)",
    [](const WorkloadSetup& s, ComponentArgs& a) -> std::unique_ptr<Workload> { return std::make_unique<RotatingHotspot>(s, a); });

}  // namespace
}  // namespace moe
