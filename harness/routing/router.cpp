#include "harness/routing/router.hpp"

#include "harness/core/error.hpp"

namespace moe {

std::string router_registry_name(const std::string& instance) { return instance.substr(0, instance.find('@')); }

std::unique_ptr<Router> make_router(const std::string& instance, const RouterSetup& setup,
                                    const std::map<std::string, std::string>& args) {
  const std::string name = router_registry_name(instance);
  const auto* entry = RouterRegistry::instance().find(name);
  if (!entry) throw InputError("unknown router '" + name + "' (known: " + join(RouterRegistry::instance().names()) + ")");
  ComponentArgs component_args("router-arg", instance, args);
  auto router = entry->factory(setup, component_args);
  component_args.reject_unknown();
  return router;
}

}  // namespace moe
