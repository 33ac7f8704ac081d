// source_ragged: unequal token counts per source rank; experts balanced.
//
// Model: at step s, rank r gets weight w_r = 1 - a + 2 a U(seed, s, r), U uniform in (0, 1) from
// the counter-based RNG (a function of seed, step and rank only: every process computes the same
// layout); its token count is 1 + (R T - R) w_r / sum(w), rounded cumulatively, T = tokens_per_rank,
// so every rank gets >= 1 token and the step's total is exactly R x T. Logits: Gumbel noise only
// (workloads/synthetic.hpp), every expert equally likely.
// Statistic: the mean count per rank is T exactly; the coefficient of variation of the counts
// within a step is a / sqrt(3) for large R (counts >> 1); each expert is a first choice with
// probability 1 / E.
// Knobs: spread = a (default 0.5, in [0, 1)).
#include "harness/core/error.hpp"
#include "harness/core/rng.hpp"
#include "workloads/synthetic.hpp"
#include "workloads/workload.hpp"

namespace moe {
namespace {

class SourceRagged final : public Workload {
 public:
  SourceRagged(const WorkloadSetup& s, ComponentArgs& a) : Workload(s), spread_(a.get_double("spread", 0.5)) {
    if (!(spread_ >= 0 && spread_ < 1)) throw InputError(synth::knob_error("source_ragged", a, "spread", "must be in [0, 1)"));
    if (s.tokens_per_rank < 1) throw InputError("--workload source_ragged: needs --tokens-per-rank >= 1");
  }

  void rank_layout(int32_t step, std::vector<int64_t>& first) override {
    const uint64_t key = rng::key(setup_.seed, 0x726167u, static_cast<uint64_t>(step));
    w_.resize(static_cast<size_t>(setup_.ep_size));
    for (int32_t r = 0; r < setup_.ep_size; ++r) w_[r] = 1 - spread_ + 2 * spread_ * rng::uniform(key, static_cast<uint64_t>(r));
    synth::apportion(w_, setup_.tokens_per_rank * setup_.ep_size, first);
  }

 private:
  void fill_logits(TokenBatch& b) override {
    const uint64_t key = rng::key(setup_.seed, 0x726168u, static_cast<uint64_t>(b.step), static_cast<uint64_t>(b.layer));
    synth::gumbel_rows(key, b.first_token, b.num_tokens, b.num_experts, nullptr, b.logits.data());
  }
  double spread_;
  std::vector<double> w_;
};

const WorkloadRegistry::Registrar reg(
    "source_ragged", "unequal tokens per source rank, uniform weights in [1-a, 1+a], total R x T (spread)",
    [](const WorkloadSetup& s, ComponentArgs& a) -> std::unique_ptr<Workload> { return std::make_unique<SourceRagged>(s, a); });

}  // namespace
}  // namespace moe
