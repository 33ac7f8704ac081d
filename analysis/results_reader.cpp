#include "analysis/results_reader.hpp"

#include <cstdio>
#include <filesystem>
#include <limits>
#include <sstream>

#include "analysis/convergence.hpp"
#include "harness/core/error.hpp"
#include "harness/report/h5.hpp"
#include "harness/report/schema.hpp"
#include "harness/report/table.hpp"

namespace moe {

namespace {
std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  std::string item;
  std::istringstream is(s);
  while (std::getline(is, item, ',')) out.push_back(item);
  return out;
}
}  // namespace

ResultsFile read_results(const std::string& path) {
  h5::silence_error_stack();
  if (!std::filesystem::exists(path)) throw InputError(path + ": no such file");
  if (H5Fis_hdf5(path.c_str()) <= 0)
    throw InputError(path + ": not an HDF5 file, so not a moebench results file");
  const hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0) throw InputError(path + ": cannot open as HDF5");
  h5::Handle file(f, H5Fclose);
  ResultsFile r;
  r.path = path;
  if (!h5::has_attr(file, "format") || h5::read_attr_string(file, "format") != schema::kFormatName)
    throw InputError(path + ": not a moebench results file (root attribute 'format' is not '" +
                     schema::kFormatName + "')");
  r.format_version = h5::read_attr_int(file, "format_version");
  if (r.format_version != schema::kFormatVersion)
    throw InputError(path + ": results format_version " + std::to_string(r.format_version) +
                     " is not supported (this moebench reads version " +
                     std::to_string(schema::kFormatVersion) + ")");
  r.status = h5::read_attr_string(file, "status");
  r.config_json = h5::read_attr_string(file, "config");
  r.command_line = h5::read_attr_string(file, "command_line");
  r.git_sha = h5::read_attr_string(file, "git_sha");
  r.moebench_version = h5::read_attr_string(file, "moebench_version");
  r.topology_json = h5::read_attr_string(file, "topology");
  r.hosts = h5::read_attr_string(file, "hosts");
  r.steps_done = h5::read_attr_int(file, "steps_done");
  r.steps_planned = h5::read_attr_int(file, "steps_planned");
  r.layers = h5::read_attr_int(file, "layers");
  r.experts = h5::read_attr_int(file, "experts");
  r.ep_size = h5::read_attr_int(file, "ep_size");
  r.world_size = h5::read_attr_int(file, "world_size");
  r.routers = split_commas(h5::read_attr_string(file, "routers"));
  if (h5::has_attr(file, "trace_tail")) {  // older files: no tail was ever completed
    r.trace_tail = h5::read_attr_string(file, "trace_tail");
    r.trace_tail_params = h5::read_attr_string(file, "trace_tail_params");
  }
  for (const auto& router : r.routers) {
    const std::string g = "/runs/" + router + "/";
    {
      const std::string rg = "/runs/" + router;
      if (h5::has_link(file, rg)) {
        h5::Handle group(h5::check(H5Gopen2(file, rg.c_str(), H5P_DEFAULT), "H5Gopen"), H5Gclose);
        if (h5::has_attr(group, "tail_completed") && h5::read_attr_int(group, "tail_completed"))
          r.tail_routers.insert(router);
      }
    }
    auto& recs = r.records[router];
    recs.assign(static_cast<size_t>(r.steps_done * r.layers), StepLayerMetrics{});
    auto rows_ok = [&](const std::vector<hsize_t>& dims, const std::string& name) {
      if (dims.size() != 2 || dims[1] != static_cast<hsize_t>(r.layers) ||
          dims[0] < static_cast<hsize_t>(r.steps_done))
        throw InputError(path + ": dataset " + g + name + " has the wrong shape for " +
                         std::to_string(r.steps_done) + " steps x " + std::to_string(r.layers) +
                         " layers");
    };
    for (const auto& fld : schema::kIntFields) {
      if (fld.optional && !h5::has_link(file, g + fld.name)) continue;  // an older file: stays 0
      if (!h5::has_link(file, g + fld.name))
        throw InputError(path + ": missing dataset " + g + fld.name);
      std::vector<hsize_t> dims;
      auto v = h5::read_int64(file, g + fld.name, &dims, r.steps_done);
      rows_ok(dims, fld.name);
      for (size_t i = 0; i < recs.size(); ++i) recs[i].*(fld.member) = v[i];
    }
    for (const auto& fld : schema::kRealFields) {
      if (fld.optional && !h5::has_link(file, g + fld.name)) {  // an older file
        for (auto& rec : recs) rec.*(fld.member) = std::numeric_limits<double>::quiet_NaN();
        continue;
      }
      if (!h5::has_link(file, g + fld.name))
        throw InputError(path + ": missing dataset " + g + fld.name);
      std::vector<hsize_t> dims;
      auto v = h5::read_double(file, g + fld.name, &dims, r.steps_done);
      rows_ok(dims, fld.name);
      for (size_t i = 0; i < recs.size(); ++i) recs[i].*(fld.member) = v[i];
    }
    if (!h5::has_link(file,
                      g + "expert_balancedness"))  // an older file: the same figure from max/mean
      for (auto& rec : recs)
        rec.expert_balancedness = rec.expert_imbalance > 0 ? 1.0 / rec.expert_imbalance : 1.0;
    if (h5::has_link(file, g + "train_gpu_balancedness"))
      r.train_gpu_balancedness[router] = h5::read_double(file, g + "train_gpu_balancedness");
    const std::string fg = g + "figures";
    if (h5::has_link(file, fg)) {
      h5::Handle group(h5::check(H5Gopen2(file, fg.c_str(), H5P_DEFAULT), "H5Gopen"), H5Gclose);
      H5G_info_t info;
      h5::check_status(H5Gget_info(group, &info), "H5Gget_info");
      for (hsize_t i = 0; i < info.nlinks; ++i) {
        char name[256] = {};
        if (H5Lget_name_by_idx(group, ".", H5_INDEX_NAME, H5_ITER_INC, i, name, sizeof name,
                               H5P_DEFAULT) < 0)
          continue;
        std::vector<hsize_t> dims;
        auto v = h5::read_double(group, name, &dims, r.steps_done);
        rows_ok(dims, std::string("figures/") + name);
        v.resize(recs.size());
        r.figures[router][name] = std::move(v);
      }
    }
  }
  return r;
}

std::vector<OfflinePlacementGap> offline_placement_gaps(const ResultsFile& f) {
  std::vector<OfflinePlacementGap> out;
  for (const auto& router : f.routers) {
    const auto it = f.train_gpu_balancedness.find(router);
    if (it == f.train_gpu_balancedness.end() || it->second.empty()) continue;
    OfflinePlacementGap g;
    g.router = router;
    for (double x : it->second) g.train += x / static_cast<double>(it->second.size());
    const auto& recs = f.records.at(router);
    for (const auto& m : recs) {
      g.test += m.placement_balancedness / static_cast<double>(recs.size());
      g.served += m.gpu_balancedness / static_cast<double>(recs.size());
    }
    if (recs.empty()) g.test = g.served = std::numeric_limits<double>::quiet_NaN();
    g.gap = g.train - g.test;
    out.push_back(g);
  }
  return out;
}

std::string format_report(const ResultsFile& f) {
  std::ostringstream os;
  os << "moebench results: " << f.path << " (format v" << f.format_version << ", moebench "
     << f.moebench_version << ", git " << f.git_sha << ")\n";
  os << "command: " << f.command_line << "\n";
  os << "EP size " << f.ep_size << " on " << f.world_size << " processes (" << f.hosts << "), "
     << f.experts << " experts, " << f.layers << " layers\n";
  if (f.status != "complete")
    os << "WARNING: partial file (status=" << f.status << "): " << f.steps_done << " of "
       << f.steps_planned << " steps completed; the summary covers the completed steps only\n";
  else
    os << "status: complete, " << f.steps_done << " steps\n";
  std::vector<RouterSummary> rows;
  for (const auto& router : f.routers) {
    rows.push_back(summarize(router, f.records.at(router)));
    if (f.tail_routers.count(router)) rows.back().router += "*";
  }
  os << format_summary_table(rows);
  if (!f.tail_routers.empty())
    os << "* "
       << "tail completed (" << f.trace_tail << "): see the note below\n";
  for (const auto& g : offline_placement_gaps(f)) {
    char line[512];
    std::snprintf(line, sizeof line,
                  "offline placement (%s): balancedness %.4f on its training loads, %.4f on this "
                  "run's (test) loads: gap %+.4f "
                  "(train - test); %.4f served after replica selection and capacity\n",
                  g.router.c_str(), g.train, g.test, g.gap, g.served);
    os << line;
  }
  for (const auto& n : router_notes(f)) os << n << "\n";
  return os.str();
}

}  // namespace moe
