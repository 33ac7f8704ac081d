// Zipf expert popularity. Logits z_e = -s * ln(rank_l(e) + 1) + Gumbel(0,1) noise, so by the
// Gumbel-max trick a token's first choice is Zipf(s)-distributed over the popularity ranks and its
// top-k is a draw without replacement in proportion to (rank + 1)^-s (Plackett-Luce). The
// popularity order rank_l is a seeded permutation per layer: hot experts differ between layers.
#include <cmath>
#include <numeric>
#include <vector>

#include "harness/core/error.hpp"
#include "harness/core/rng.hpp"
#include "workloads/synthetic.hpp"
#include "workloads/workload.hpp"

namespace moe {
namespace {

class Zipf final : public Workload {
 public:
  Zipf(const WorkloadSetup& s, ComponentArgs& a) : Workload(s), s_(a.get_double("s", 0.3)) {
    if (!(s_ >= 0)) throw InputError("workload-arg zipf.s: must be >= 0");
    const int32_t E = s.num_experts;
    bias_.resize(static_cast<size_t>(s.num_layers) * E);
    for (int32_t l = 0; l < s.num_layers; ++l) {
      std::vector<int32_t> order(E);  // order[r] = expert with popularity rank r
      std::iota(order.begin(), order.end(), 0);
      const uint64_t key = rng::key(s.seed, 0x7a6970u, l);
      for (int32_t i = E - 1; i > 0; --i) std::swap(order[i], order[rng::below(key, i, static_cast<uint64_t>(i) + 1)]);
      for (int32_t r = 0; r < E; ++r) bias_[static_cast<size_t>(l) * E + order[r]] = static_cast<float>(-s_ * std::log(r + 1.0));
    }
  }

 private:
  void fill_logits(TokenBatch& b) override {
    const int64_t E = b.num_experts;
    const float* bias = bias_.data() + static_cast<size_t>(b.layer) * E;
    // The vectorised counter-based Gumbel noise of workloads/synthetic.hpp (bit-identical on any
    // split and any CPU): about 10x the scalar double-precision draw.
    const uint64_t key = rng::key(setup_.seed, 0x7a6971u, b.step, b.layer);
    synth::gumbel_rows(key, b.first_token, b.num_tokens, static_cast<int32_t>(E), bias, b.logits.data());
  }
  double s_;
  std::vector<float> bias_;  // [layers, E]
};

const WorkloadRegistry::Registrar reg(
    "zipf", "Zipf(s) expert popularity via Gumbel-perturbed log-popularity logits, hot set differs per layer (s)",
    [](const WorkloadSetup& s, ComponentArgs& a) -> std::unique_ptr<Workload> { return std::make_unique<Zipf>(s, a); });

}  // namespace
}  // namespace moe
