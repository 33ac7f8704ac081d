// lognormal: per-rank token counts drawn lognormal each step; experts balanced.
//
// Model: at step s, rank r gets weight w_r = exp(sigma Z_r), Z_r ~ N(0, 1) from the counter-based
// RNG keyed by (seed, s, r); its token count is 1 + (R T - R) w_r / sum(w), rounded cumulatively,
// T = tokens_per_rank, so every rank gets >= 1 token and the step's total is exactly R x T (the
// same on every process). Logits: Gumbel noise only (workloads/synthetic.hpp).
// Statistic: the mean count per rank is T exactly; within a step log(count_r) = sigma Z_r + a
// constant for counts >> 1, so the standard deviation of log counts is sigma; each expert is a
// first choice with probability 1 / E.
// Knobs: sigma (default 0.5, in [0, 10]).
#include <cmath>

#include "harness/core/error.hpp"
#include "harness/core/rng.hpp"
#include "workloads/synthetic.hpp"
#include "workloads/workload.hpp"

namespace moe {
namespace {

class Lognormal final : public Workload {
 public:
  Lognormal(const WorkloadSetup& s, ComponentArgs& a) : Workload(s), sigma_(a.get_double("sigma", 0.5)) {
    if (!(sigma_ >= 0 && sigma_ <= 10)) throw InputError(synth::knob_error("lognormal", a, "sigma", "must be in [0, 10]"));
    if (s.tokens_per_rank < 1) throw InputError("--workload lognormal: needs --tokens-per-rank >= 1");
  }

  void rank_layout(int32_t step, std::vector<int64_t>& first) override {
    const uint64_t key = rng::key(setup_.seed, 0x6c6f67u, static_cast<uint64_t>(step));
    w_.resize(static_cast<size_t>(setup_.ep_size));
    for (int32_t r = 0; r < setup_.ep_size; ++r) w_[r] = std::exp(sigma_ * rng::normal(key, static_cast<uint64_t>(r)));
    synth::apportion(w_, setup_.tokens_per_rank * setup_.ep_size, first);
  }

 private:
  void fill_logits(TokenBatch& b) override {
    const uint64_t key = rng::key(setup_.seed, 0x6c6f68u, static_cast<uint64_t>(b.step), static_cast<uint64_t>(b.layer));
    synth::gumbel_rows(key, b.first_token, b.num_tokens, b.num_experts, nullptr, b.logits.data());
  }
  double sigma_;
  std::vector<double> w_;
};

const WorkloadRegistry::Registrar reg(
    "lognormal", "per-rank token counts lognormal(0, sigma) each step, total R x T (sigma)",
    [](const WorkloadSetup& s, ComponentArgs& a) -> std::unique_ptr<Workload> { return std::make_unique<Lognormal>(s, a); });

}  // namespace
}  // namespace moe
