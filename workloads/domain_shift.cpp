// Sequences made of domain segments. Each sequence is cut into segments of length uniform in
// [segment_min, segment_max]; each segment draws one of `domains` domains; each domain favours
// `experts_per_domain` experts per layer, whose logits get +boost over N(0,1) noise. Segment cuts and
// domains are keyed by (seed, sequence, segment), so every layer sees the same domain for a token.
#include <algorithm>
#include <numeric>
#include <vector>

#include "harness/core/error.hpp"
#include "harness/core/rng.hpp"
#include "workloads/workload.hpp"

namespace moe {
namespace {

class DomainShift final : public Workload {
 public:
  DomainShift(const WorkloadSetup& s, ComponentArgs& a)
      : Workload(s),
        domains_(a.get_int("domains", 8)),
        seg_min_(a.get_int("segment_min", 64)),
        seg_max_(a.get_int("segment_max", 256)),
        per_domain_(a.get_int("experts_per_domain", s.top_k)),
        boost_(static_cast<float>(a.get_double("boost", 3.0))) {
    if (domains_ < 1) throw InputError("workload-arg domain_shift.domains: must be >= 1");
    if (seg_min_ < 1 || seg_max_ < seg_min_)
      throw InputError("workload-arg domain_shift.segment_min/segment_max: need 1 <= segment_min <= segment_max");
    if (per_domain_ < 1 || per_domain_ > s.num_experts)
      throw InputError("workload-arg domain_shift.experts_per_domain: must be in [1, experts]");
    const int32_t E = s.num_experts;
    favoured_.assign(static_cast<size_t>(s.num_layers) * domains_ * E, 0);
    for (int32_t l = 0; l < s.num_layers; ++l)
      for (int64_t d = 0; d < domains_; ++d) {
        std::vector<int32_t> order(E);
        std::iota(order.begin(), order.end(), 0);
        const uint64_t key = rng::key(s.seed, 0x646f6du, l, static_cast<uint64_t>(d));
        for (int64_t i = 0; i < per_domain_; ++i) {  // partial Fisher-Yates: first per_domain_ picks
          const auto j = static_cast<int64_t>(i + rng::below(key, i, static_cast<uint64_t>(E - i)));
          std::swap(order[i], order[j]);
          favoured_[(static_cast<size_t>(l) * domains_ + d) * E + order[i]] = 1;
        }
      }
  }

  // Domain of position `pos` of sequence `seq`.
  int64_t domain_of(int64_t seq, int64_t pos) const {
    const uint64_t key = rng::key(setup_.seed, 0x736567u, static_cast<uint64_t>(seq));
    int64_t start = 0;
    for (uint64_t seg = 0;; ++seg) {
      const int64_t len = seg_min_ + static_cast<int64_t>(rng::below(key, 2 * seg, static_cast<uint64_t>(seg_max_ - seg_min_ + 1)));
      if (pos < start + len) return static_cast<int64_t>(rng::below(key, 2 * seg + 1, static_cast<uint64_t>(domains_)));
      start += len;
    }
  }

 private:
  void fill_logits(TokenBatch& b) override {
    const int64_t E = b.num_experts;
    const uint64_t key = rng::key(setup_.seed, 0x646f6eu, b.step, b.layer);
    b.domain.resize(static_cast<size_t>(b.num_tokens));
    b.experts_per_domain = static_cast<int32_t>(per_domain_);
    b.domain_experts.clear();
    for (int64_t d = 0; d < domains_; ++d)
      for (int32_t e = 0; e < E; ++e)
        if (favoured_[(static_cast<size_t>(b.layer) * domains_ + d) * E + e]) b.domain_experts.push_back(e);
    for (int64_t t = 0; t < b.num_tokens; ++t) {
      const int64_t d = domain_of(b.sequence[t], b.position[t]);
      b.domain[t] = static_cast<int32_t>(d);
      const uint8_t* fav = favoured_.data() + (static_cast<size_t>(b.layer) * domains_ + d) * E;
      for (int64_t e = 0; e < E; ++e)
        b.logits[t * E + e] = static_cast<float>(rng::normal(key, (b.first_token + t) * E + e)) + (fav[e] ? boost_ : 0.f);
    }
  }
  int64_t domains_, seg_min_, seg_max_, per_domain_;
  float boost_;
  std::vector<uint8_t> favoured_;  // [layers, domains, E]
};

const WorkloadRegistry::Registrar reg(
    "domain_shift",
    "sequences of domain segments, each domain boosting a few experts (domains, segment_min, segment_max, experts_per_domain, boost)",
    [](const WorkloadSetup& s, ComponentArgs& a) -> std::unique_ptr<Workload> { return std::make_unique<DomainShift>(s, a); });

}  // namespace
}  // namespace moe
