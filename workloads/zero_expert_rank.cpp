// zero_expert_rank: the experts of one EP rank are never chosen; one rank receives no tokens.
//
// Model: the "zero" experts are those contiguous placement puts on EP rank `rank`: e with
// floor(e * R / E) = rank (E / R of them when R divides E). Their logits are Gumbel noise - 30,
// every other expert's plain Gumbel noise (workloads/synthetic.hpp). Since the noise lies in
// [-2.82, 16.64], a zero expert's logit (<= -13.3) is below every other expert's: with contiguous
// placement that rank's all-to-all receive column is empty, the edge case of empty messages and
// of routers that balance load (they may still send tokens there; the logits never do).
// Statistic (exact): no zero expert is among a token's top-k logits (top_k <= E - zero experts);
// each other expert is a token's first choice with probability 1 / (E - zero experts).
// Knobs: rank (default 0, in [0, ep_size); must host at least one expert: E >= R or rank a
// multiple of R / E).
#include "harness/core/error.hpp"
#include "harness/core/rng.hpp"
#include "workloads/synthetic.hpp"
#include "workloads/workload.hpp"

namespace moe {
namespace {

class ZeroExpertRank final : public Workload {
 public:
  ZeroExpertRank(const WorkloadSetup& s, ComponentArgs& a) : Workload(s) {
    const int64_t rank = a.get_int("rank", 0);
    if (rank < 0 || rank >= s.ep_size)
      throw InputError(synth::knob_error("zero_expert_rank", a, "rank", "must be in [0, ep-size) = [0, " + std::to_string(s.ep_size) + ")"));
    bias_.assign(static_cast<size_t>(s.num_experts), 0.0f);
    int64_t zero = 0;
    for (int64_t e = 0; e < s.num_experts; ++e)
      if (e * s.ep_size / s.num_experts == rank) {
        bias_[static_cast<size_t>(e)] = -30.0f;
        ++zero;
      }
    if (zero == 0)
      throw InputError(synth::knob_error("zero_expert_rank", a, "rank",
                                         "hosts no expert under contiguous placement (" + std::to_string(s.num_experts) + " experts over " +
                                             std::to_string(s.ep_size) + " ranks)"));
    if (s.num_experts - zero < s.top_k)
      throw InputError("--workload zero_expert_rank: rank " + std::to_string(rank) + " hosts " + std::to_string(zero) + " of " +
                       std::to_string(s.num_experts) + " experts, fewer than top-k " + std::to_string(s.top_k) + " would remain");
  }

 private:
  void fill_logits(TokenBatch& b) override {
    const uint64_t key = rng::key(setup_.seed, 0x7a6572u, static_cast<uint64_t>(b.step), static_cast<uint64_t>(b.layer));
    synth::gumbel_rows(key, b.first_token, b.num_tokens, b.num_experts, bias_.data(), b.logits.data());
  }
  std::vector<float> bias_;
};

const WorkloadRegistry::Registrar reg(
    "zero_expert_rank", "the experts contiguous placement puts on one rank are never chosen (rank)",
    [](const WorkloadSetup& s, ComponentArgs& a) -> std::unique_ptr<Workload> { return std::make_unique<ZeroExpertRank>(s, a); });

}  // namespace
}  // namespace moe
