// Expert loads from another run or a trace, for an offline placement (--placement-loads file:).
#include "harness/driver/loads_file.hpp"

#include <filesystem>
#include <sstream>

#include "harness/core/error.hpp"
#include "harness/report/h5.hpp"
#include "harness/report/schema.hpp"
#include "workloads/trace_cli.hpp"
#include "workloads/trace_file.hpp"

namespace moe {

namespace {

std::vector<std::vector<double>> results_loads(const std::string& what, const std::string& path,
                                               hid_t file, const std::string& router_in, int32_t E,
                                               int32_t L) {
  std::vector<std::string> routers;
  std::istringstream is(h5::read_attr_string(file, "routers"));
  for (std::string r; std::getline(is, r, ',');) routers.push_back(r);
  std::string all;
  for (const auto& r : routers) all += (all.empty() ? "" : ", ") + r;
  std::string router = router_in;
  if (router.empty()) {
    if (routers.size() != 1)
      throw InputError(what + ": " + path + " holds several routers (" + all +
                       "): name one, file:" + path + "#ROUTER");
    router = routers[0];
  } else if (std::find(routers.begin(), routers.end(), router) == routers.end()) {
    throw InputError(what + ": router '" + router + "' is not in " + path + " (routers: " + all +
                     ")");
  }
  const int64_t steps = h5::read_attr_int(file, "steps_done");
  const int64_t file_E = h5::read_attr_int(file, "experts"),
                file_L = h5::read_attr_int(file, "layers");
  if (file_E != E)
    throw InputError(what + ": " + path + " has " + std::to_string(file_E) + " experts, the run " +
                     std::to_string(E));
  if (file_L != L)
    throw InputError(what + ": " + path + " has " + std::to_string(file_L) + " layers, the run " +
                     std::to_string(L));
  if (steps < 1) throw InputError(what + ": " + path + " has no completed step");
  const std::string ds = "/runs/" + router + "/expert_demand";
  std::vector<hsize_t> dims;
  const auto v = h5::read_int64(file, ds, &dims, steps);
  if (dims.size() != 3 || dims[1] != static_cast<hsize_t>(L) || dims[2] != static_cast<hsize_t>(E))
    throw InputError(what + ": " + path + ": dataset " + ds + " is not [steps, layers, experts]");
  std::vector<std::vector<double>> load(static_cast<size_t>(L),
                                        std::vector<double>(static_cast<size_t>(E), 0.0));
  for (int64_t s = 0; s < steps; ++s)
    for (int32_t l = 0; l < L; ++l)
      for (int32_t e = 0; e < E; ++e)
        load[static_cast<size_t>(l)][static_cast<size_t>(e)] +=
            static_cast<double>(v[static_cast<size_t>((s * L + l) * E + e)]);
  return load;
}

std::vector<std::vector<double>> trace_loads(const std::string& what, const std::string& path,
                                             int32_t E, int32_t L, int32_t top_k) {
  TraceReader r(path);
  const TraceHeader& h = r.header();
  if (h.num_experts != E)
    throw InputError(what + ": " + path + " has " + std::to_string(h.num_experts) +
                     " experts, the run " + std::to_string(E));
  if (h.num_layers != L)
    throw InputError(what + ": " + path + " has " + std::to_string(h.num_layers) +
                     " layers, the run " + std::to_string(L));
  const auto counts = trace_expert_loads(r, h.logits() ? top_k : h.top_k);
  std::vector<std::vector<double>> load(static_cast<size_t>(L),
                                        std::vector<double>(static_cast<size_t>(E), 0.0));
  for (int32_t l = 0; l < L; ++l)
    for (int32_t e = 0; e < E; ++e)
      load[static_cast<size_t>(l)][static_cast<size_t>(e)] =
          static_cast<double>(counts[static_cast<size_t>(l)][static_cast<size_t>(e)]);
  return load;
}

}  // namespace

std::vector<std::vector<double>> read_loads_file(const std::string& spec, int32_t E, int32_t L,
                                                 int32_t top_k) {
  const std::string what = "--placement-loads file:" + spec;
  const auto hash = spec.rfind('#');
  const std::string path = hash == std::string::npos ? spec : spec.substr(0, hash);
  const std::string router = hash == std::string::npos ? "" : spec.substr(hash + 1);
  h5::silence_error_stack();
  if (!std::filesystem::exists(path)) throw InputError(what + ": " + path + ": no such file");
  if (H5Fis_hdf5(path.c_str()) <= 0)
    throw InputError(what + ": " + path +
                     ": not an HDF5 file (expected a moebench results file or trace)");
  std::string format;
  {
    const hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) throw InputError(what + ": " + path + ": cannot open as HDF5");
    h5::Handle file(f, H5Fclose);
    format = h5::has_attr(file, "format") ? h5::read_attr_string(file, "format") : "";
    if (format == schema::kFormatName) return results_loads(what, path, file, router, E, L);
  }
  if (format == kTraceFormatName) {
    if (!router.empty())
      throw InputError(what + ": " + path + " is a trace; '#" + router +
                       "' names a router of a results file");
    return trace_loads(what, path, E, L, top_k);
  }
  throw InputError(what + ": " + path +
                   " is neither a moebench results file nor a trace (root attribute 'format' is '" +
                   format + "')");
}

}  // namespace moe
