// layer_affinity: a token's expert at layer l + 1 follows from its expert at layer l.
//
// Model: each token (step, global index t) carries a chain of experts c_0, c_1, ...: c_0 uniform;
// c_{l+1} = pi_l(c_l) with probability a, else a fresh uniform expert (pi_l a seeded permutation
// of the experts per layer pair, the same for all tokens; every draw from the counter-based RNG
// keyed by (seed, step, t, l), computed backwards from l to the last fresh draw, so any layer is
// made without the others). Logits at layer l: Gumbel noise + 20 on c_l (workloads/synthetic.hpp);
// the noise spans less than 20, so c_l is the first choice, and the rest of the top-k is random.
// Statistic (exact in expectation): the first choice at layer l + 1 is pi_l(first choice at layer
// l) with probability a + (1 - a) / E; at every layer each expert is a first choice with
// probability 1 / E. Expert-prefetch and layer-pipelined placement exploit such correlation.
// Knobs: affinity = a (default 0.8, in [0, 1]).
#include <numeric>
#include <vector>

#include "harness/core/error.hpp"
#include "harness/core/rng.hpp"
#include "workloads/synthetic.hpp"
#include "workloads/workload.hpp"

namespace moe {
namespace {

class LayerAffinity final : public Workload {
 public:
  LayerAffinity(const WorkloadSetup& s, ComponentArgs& a) : Workload(s), affinity_(a.get_double("affinity", 0.8)) {
    if (!(affinity_ >= 0 && affinity_ <= 1))
      throw InputError(synth::knob_error("layer_affinity", a, "affinity", "must be in [0, 1]"));
    const int32_t E = s.num_experts;
    perm_.resize(static_cast<size_t>(s.num_layers) * E);
    for (int32_t l = 0; l < s.num_layers; ++l) {
      int32_t* p = perm_.data() + static_cast<size_t>(l) * E;
      std::iota(p, p + E, 0);
      const uint64_t key = rng::key(s.seed, 0x6166ffu, static_cast<uint64_t>(l));
      for (int32_t i = E - 1; i > 0; --i) std::swap(p[i], p[rng::below(key, static_cast<uint64_t>(i), static_cast<uint64_t>(i) + 1)]);
    }
  }

 private:
  // c_l of global token t at `step`.
  int32_t chain(uint64_t key, int64_t t, int32_t l) const {
    const int32_t E = setup_.num_experts;
    const auto base = static_cast<uint64_t>(t) * static_cast<uint64_t>(setup_.num_layers);
    int32_t j = l;
    while (j > 0 && rng::uniform(key, 2 * (base + static_cast<uint64_t>(j))) < affinity_) --j;  // c_j = pi_{j-1}(c_{j-1})
    auto c = static_cast<int32_t>(rng::below(key, 2 * (base + static_cast<uint64_t>(j)) + 1, static_cast<uint64_t>(E)));
    for (int32_t i = j; i < l; ++i) c = perm_[static_cast<size_t>(i) * E + static_cast<size_t>(c)];
    return c;
  }

  void fill_logits(TokenBatch& b) override {
    const int32_t E = b.num_experts;
    const uint64_t noise_key = rng::key(setup_.seed, 0x616666u, static_cast<uint64_t>(b.step), static_cast<uint64_t>(b.layer));
    const uint64_t chain_key = rng::key(setup_.seed, 0x616667u, static_cast<uint64_t>(b.step));
    synth::gumbel_rows(noise_key, b.first_token, b.num_tokens, E, nullptr, b.logits.data());
    for (int64_t t = 0; t < b.num_tokens; ++t) b.logits[static_cast<size_t>(t * E + chain(chain_key, b.first_token + t, b.layer))] += 20.0f;
  }
  double affinity_;
  std::vector<int32_t> perm_;  // [layers, E]: pi_l
};

const WorkloadRegistry::Registrar reg(
    "layer_affinity", "a token's first choice at layer l+1 is a fixed map of its choice at layer l with probability a (affinity)",
    [](const WorkloadSetup& s, ComponentArgs& a) -> std::unique_ptr<Workload> { return std::make_unique<LayerAffinity>(s, a); });

}  // namespace
}  // namespace moe
