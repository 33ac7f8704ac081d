#pragma once
#include <functional>
#include <memory>
#include <string>

#include "harness/core/comm.hpp"
#include "harness/core/registry.hpp"
#include "harness/core/types.hpp"

namespace moe {

// What an exchange measured. Backends that only model (sim) measure nothing.
struct ExchangeResult {
  bool measured = false;
  double dispatch_s = 0;  // slowest rank
  double combine_s = 0;
};

// Sees traffic matrices and bytes, never routers. Collective over `group`.
class ExchangeBackend {
 public:
  virtual ~ExchangeBackend() = default;
  virtual ExchangeResult exchange(const TrafficMatrix& dispatch, const TrafficMatrix& combine, const Topology& topology,
                                  const Comm& group) = 0;
};

using BackendFactory = std::function<std::unique_ptr<ExchangeBackend>()>;
using BackendRegistry = Registry<BackendFactory>;

std::unique_ptr<ExchangeBackend> make_backend(const std::string& name);

}  // namespace moe
