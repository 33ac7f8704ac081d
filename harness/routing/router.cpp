#include "harness/routing/router.hpp"

#include "harness/core/error.hpp"

namespace moe {

std::unique_ptr<Router> make_router(const std::string& name, const RouterSetup& setup,
                                    const std::map<std::string, std::string>& args) {
  const auto* entry = RouterRegistry::instance().find(name);
  if (!entry) throw InputError("unknown router '" + name + "' (known: " + join(RouterRegistry::instance().names()) + ")");
  ComponentArgs component_args("router-arg", name, args);
  auto router = entry->factory(setup, component_args);
  component_args.reject_unknown();
  return router;
}

}  // namespace moe
