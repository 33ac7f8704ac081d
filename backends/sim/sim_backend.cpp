// The sim backend moves no bytes: the cost model's prediction (recorded for every backend) is its
// only figure, so it scales to EP sizes far beyond the processes running it (virtual ranks).
#include "backends/backend.hpp"

namespace moe {
namespace {
class SimBackend final : public ExchangeBackend {
 public:
  ExchangeResult exchange(const TrafficMatrix&, const TrafficMatrix&, const Topology&, const Comm&) override {
    return {};
  }
};
const BackendRegistry::Registrar reg("sim", "analytical cost model only (latency + bytes/bandwidth per link class); any EP size",
                                     [](const BackendSetup&, const Topology&, const Comm&) { return std::make_unique<SimBackend>(); });
}  // namespace
}  // namespace moe
