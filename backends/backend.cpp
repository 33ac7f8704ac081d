#include "backends/backend.hpp"

#include "harness/core/error.hpp"

namespace moe {

std::unique_ptr<ExchangeBackend> make_backend(const std::string& name, const BackendSetup& setup, const Topology& topology,
                                              const Comm& group) {
  const auto* entry = BackendRegistry::instance().find(name);
  if (!entry) throw InputError("unknown backend '" + name + "' (known: " + join(BackendRegistry::instance().names()) + ")");
  return entry->factory(setup, topology, group);
}

}  // namespace moe
