// balanced: every expert gets the same number of top-k choices, exactly, on every source rank.
//
// Model: token t (global index in the step) takes the k = --top-k experts pi_l((t * k + i) mod E),
// i = 0..k-1 (consecutive stretches of one cycle over the experts; pi_l a seeded permutation per
// layer); its j-th choice is i = (j + w) mod k with w = floor(t / (E / gcd(E, k))) mod k, so which
// of its k experts comes first shifts after each run of E / gcd(E, k) tokens. Logits: (k - j) + u/2 for its j-th choice,
// u/2 for the other experts, u uniform in (0, 1) from the counter-based noise
// (workloads/synthetic.hpp): the top-k of the logits is exactly that list, in that order, no ties.
// Statistic (exact, not in expectation): any contiguous range of n tokens -- a source rank, a
// process, the whole step -- gives every expert floor(n * k / E) or ceil(n * k / E) of the top-k
// choices of the logits; any E * k consecutive tokens give every expert exactly k first choices.
// Needs k <= E.
// Knobs: none. The balanced reference for placements (max / mean expert load = 1 up to rounding).
#include <numeric>
#include <vector>

#include "harness/core/error.hpp"
#include "harness/core/rng.hpp"
#include "workloads/synthetic.hpp"
#include "workloads/workload.hpp"

namespace moe {
namespace {

class Balanced final : public Workload {
 public:
  Balanced(const WorkloadSetup& s, ComponentArgs&) : Workload(s) {
    if (s.top_k < 1 || s.top_k > s.num_experts)
      throw InputError("--workload balanced: needs 1 <= top-k <= experts (top-k " + std::to_string(s.top_k) + ", experts " +
                       std::to_string(s.num_experts) + ")");
    const int32_t E = s.num_experts;
    run_ = E / std::gcd(E, s.top_k);
    perm_.resize(static_cast<size_t>(s.num_layers) * E);
    for (int32_t l = 0; l < s.num_layers; ++l) {
      int32_t* p = perm_.data() + static_cast<size_t>(l) * E;
      std::iota(p, p + E, 0);
      const uint64_t key = rng::key(s.seed, 0x62616cu, static_cast<uint64_t>(l));
      for (int32_t i = E - 1; i > 0; --i) std::swap(p[i], p[rng::below(key, static_cast<uint64_t>(i), static_cast<uint64_t>(i) + 1)]);
    }
  }

 private:
  void fill_logits(TokenBatch& b) override {
    const int32_t E = b.num_experts, k = setup_.top_k;
    const uint64_t key = rng::key(setup_.seed, 0x62616du, static_cast<uint64_t>(b.step), static_cast<uint64_t>(b.layer));
    synth::uniform_rows(key, b.first_token, b.num_tokens, E, b.logits.data());
    const int32_t* p = perm_.data() + static_cast<size_t>(b.layer) * E;
    for (int64_t t = 0; t < b.num_tokens; ++t) {
      float* z = b.logits.data() + t * E;
      for (int32_t e = 0; e < E; ++e) z[e] *= 0.5f;
      const int64_t cycle = (b.first_token + t) * k;  // position of the token's first expert in the cycle
      const int64_t shift = ((b.first_token + t) / run_) % k;
      for (int32_t j = 0; j < k; ++j) z[p[(cycle + (j + shift) % k) % E]] += static_cast<float>(k - j);
    }
  }
  std::vector<int32_t> perm_;  // [layers, E]
  int64_t run_ = 1;            // E / gcd(E, k)
};

const WorkloadRegistry::Registrar reg(
    "balanced", "every expert gets exactly the same share of top-k choices on every rank (no knobs)",
    [](const WorkloadSetup& s, ComponentArgs& a) -> std::unique_ptr<Workload> { return std::make_unique<Balanced>(s, a); });

}  // namespace
}  // namespace moe
