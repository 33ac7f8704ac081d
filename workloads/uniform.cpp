// iid Gaussian logits: no expert is preferred; the balanced reference.
#include "harness/core/error.hpp"
#include "harness/core/rng.hpp"
#include "workloads/workload.hpp"

namespace moe {
namespace {

class Uniform final : public Workload {
 public:
  Uniform(const WorkloadSetup& s, ComponentArgs& a) : Workload(s), std_(a.get_double("std", 1.0)) {
    if (!(std_ > 0)) throw InputError("workload-arg uniform.std: must be > 0");
  }

 private:
  void fill_logits(TokenBatch& b) override {
    const int64_t E = b.num_experts;
    const uint64_t key = rng::key(setup_.seed, 0x756e69u, b.step, b.layer);
    for (int64_t t = 0; t < b.num_tokens; ++t)
      for (int64_t e = 0; e < E; ++e)
        b.logits[t * E + e] = static_cast<float>(std_ * rng::normal(key, (b.first_token + t) * E + e));
  }
  double std_;
};

const WorkloadRegistry::Registrar reg("uniform", "iid Gaussian logits N(0, std^2): balanced in expectation (std)",
                                      [](const WorkloadSetup& s, ComponentArgs& a) -> std::unique_ptr<Workload> {
                                        return std::make_unique<Uniform>(s, a);
                                      });

}  // namespace
}  // namespace moe
