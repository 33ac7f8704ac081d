// `moebench export matrix|placement`: round trips out of a results file, into the formats other
// tools read (alltoallv transfer matrices, SGLang's --init-expert-location), from the file alone.
#include "analysis/export_cli.hpp"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "harness/core/error.hpp"
#include "harness/report/h5.hpp"
#include "harness/report/schema.hpp"

namespace moe {

namespace {

constexpr const char* kExportUsage =
    "usage: moebench export matrix RESULTS.h5 [--router R] [--step S] [--layer L] [--format "
    "txt|csv]\n"
    "                              [--what bytes|tokens] [--out FILE [--force]]\n"
    "         the rank x rank dispatch matrix of one step and layer: one row per sender, one "
    "column per\n"
    "         receiver (bytes by default, self-traffic on the diagonal); txt: space-separated, "
    "csv:\n"
    "         comma-separated, no header. Replay it with `mpirun -np R moebench bench-a2a --matrix "
    "FILE`.\n"
    "       moebench export placement RESULTS.h5 [--router R] [--step S] --format sglang|json "
    "[--out FILE [--force]]\n"
    "         the placement of every layer at step S (default: the last completed step) as the\n"
    "         physical-to-logical map [layers, physical experts]; sglang: the JSON SGLang's\n"
    "         --init-expert-location reads; json: the same map with moebench's metadata (ep_size,\n"
    "         slots_per_rank, experts, router, step). Read either back with `run --placement "
    "file:PATH`.\n"
    "  --router defaults to the file's only router; --step and --layer to 0 for matrices.\n";

struct Opened {
  h5::Handle file;
  int64_t steps_done = 0, layers = 0, experts = 0, ep_size = 0;
  std::vector<std::string> routers;
};

Opened open_results(const std::string& path) {
  h5::silence_error_stack();
  if (!std::filesystem::exists(path)) throw InputError(path + ": no such file");
  if (H5Fis_hdf5(path.c_str()) <= 0)
    throw InputError(path + ": not an HDF5 file, so not a moebench results file");
  const hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0) throw InputError(path + ": cannot open as HDF5");
  Opened o;
  o.file = h5::Handle(f, H5Fclose);
  if (!h5::has_attr(o.file, "format") ||
      h5::read_attr_string(o.file, "format") != schema::kFormatName)
    throw InputError(path + ": not a moebench results file (root attribute 'format' is not '" +
                     schema::kFormatName + "')");
  o.steps_done = h5::read_attr_int(o.file, "steps_done");
  o.layers = h5::read_attr_int(o.file, "layers");
  o.experts = h5::read_attr_int(o.file, "experts");
  o.ep_size = h5::read_attr_int(o.file, "ep_size");
  std::istringstream is(h5::read_attr_string(o.file, "routers"));
  for (std::string r; std::getline(is, r, ',');) o.routers.push_back(r);
  return o;
}

std::string pick_router(const Opened& o, const std::string& path, const std::string& router) {
  std::string all;
  for (const auto& r : o.routers) all += (all.empty() ? "" : ", ") + r;
  if (router.empty()) {
    if (o.routers.size() == 1) return o.routers[0];
    throw InputError(path + " holds several routers (" + all + "): name one with --router");
  }
  for (const auto& r : o.routers)
    if (r == router) return r;
  throw InputError("--router " + router + ": not a router of " + path + " (routers: " + all + ")");
}

// Writes `text` to `out` (stdout when empty) through OUT.tmp + rename: an error leaves no file.
void emit(const std::string& text, const std::string& out, bool force) {
  if (out.empty()) {
    std::fwrite(text.data(), 1, text.size(), stdout);
    return;
  }
  if (std::filesystem::exists(out) && !force)
    throw InputError("--out " + out + ": file exists; refusing to overwrite (add --force)");
  const std::string tmp = out + ".tmp";
  {
    std::ofstream os(tmp, std::ios::binary | std::ios::trunc);
    if (!os)
      throw InputError("--out " + out +
                       ": cannot create the file (does its folder exist and is it writable?)");
    os << text;
    os.flush();
    if (!os) {
      std::filesystem::remove(tmp);
      throw InputError("--out " + out + ": write failed");
    }
  }
  std::filesystem::rename(tmp, out);
}

int64_t index_option(const std::string& name, const std::string& text) {
  size_t used = 0;
  long long v = -1;
  try {
    v = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || v < 0)
    throw InputError(name + " '" + text + "': expected an integer >= 0");
  return v;
}

}  // namespace

std::vector<int64_t> read_dispatch_matrix(const std::string& path, const std::string& router_in,
                                          int64_t step, int64_t layer, const std::string& what,
                                          int64_t& ranks, std::string* router_out) {
  Opened o = open_results(path);
  const std::string router = pick_router(o, path, router_in);
  if (router_out) *router_out = router;
  if (step >= o.steps_done)
    throw InputError("--step " + std::to_string(step) + ": " + path + " has " +
                     std::to_string(o.steps_done) + " completed steps");
  if (layer >= o.layers)
    throw InputError("--layer " + std::to_string(layer) + ": " + path + " has " +
                     std::to_string(o.layers) + " layers");
  const std::string name = what == "tokens" ? "dispatch_tokens" : "dispatch_bytes";
  const std::string ds = "/runs/" + router + "/" + name;
  if (!h5::has_link(o.file, ds))
    throw InputError(path + ": no dataset " + ds +
                     (what == "tokens"
                          ? " (the run saved no dispatch matrix: run with --dispatch-matrix on)"
                          : " (the run saved no dispatch matrix, --dispatch-matrix on, or predates "
                            "dispatch_bytes: "
                            "--what tokens exports its token copies)"));
  std::vector<hsize_t> dims;
  const auto all = h5::read_int64(o.file, ds, &dims, step + 1);
  ranks = o.ep_size;
  const size_t RR = static_cast<size_t>(ranks * ranks);
  if (dims.size() != 4 || dims[1] != static_cast<hsize_t>(o.layers) ||
      dims[2] != static_cast<hsize_t>(ranks) || dims[3] != static_cast<hsize_t>(ranks))
    throw InputError(path + ": dataset " + ds + " does not have the shape [steps, layers, R, R]");
  const size_t at =
      (static_cast<size_t>(step) * static_cast<size_t>(o.layers) + static_cast<size_t>(layer)) * RR;
  return {all.begin() + static_cast<std::ptrdiff_t>(at),
          all.begin() + static_cast<std::ptrdiff_t>(at + RR)};
}

std::string format_matrix(const std::vector<int64_t>& m, int64_t ranks, const std::string& format) {
  const char sep = format == "csv" ? ',' : ' ';
  std::string out;
  for (int64_t s = 0; s < ranks; ++s) {
    for (int64_t d = 0; d < ranks; ++d) {
      if (d) out += sep;
      out += std::to_string(m[static_cast<size_t>(s * ranks + d)]);
    }
    out += '\n';
  }
  return out;
}

ExportedPlacement read_placement(const std::string& path, const std::string& router_in,
                                 int64_t step) {
  Opened o = open_results(path);
  ExportedPlacement p;
  p.router = pick_router(o, path, router_in);
  if (o.steps_done == 0) throw InputError(path + ": no completed step, so no placement to export");
  p.step = step < 0 ? o.steps_done - 1 : step;
  if (p.step >= o.steps_done)
    throw InputError("--step " + std::to_string(p.step) + ": " + path + " has " +
                     std::to_string(o.steps_done) + " completed steps");
  const std::string ds = "/runs/" + p.router + "/expert_of_slot";
  if (!h5::has_link(o.file, ds)) throw InputError(path + ": no dataset " + ds);
  std::vector<hsize_t> dims;
  const auto all = h5::read_int64(o.file, ds, &dims, p.step + 1);
  if (dims.size() != 3 || dims[1] != static_cast<hsize_t>(o.layers) ||
      dims[2] % static_cast<hsize_t>(o.ep_size) != 0)
    throw InputError(path + ": dataset " + ds +
                     " does not have the shape [steps, layers, R x slots]");
  p.experts = o.experts;
  p.ep_size = o.ep_size;
  p.slots_per_rank = static_cast<int64_t>(dims[2]) / o.ep_size;
  const size_t width = static_cast<size_t>(dims[2]);
  p.physical_to_logical.resize(static_cast<size_t>(o.layers));
  for (size_t l = 0; l < p.physical_to_logical.size(); ++l) {
    const size_t at = (static_cast<size_t>(p.step) * static_cast<size_t>(o.layers) + l) * width;
    p.physical_to_logical[l].assign(all.begin() + static_cast<std::ptrdiff_t>(at),
                                    all.begin() + static_cast<std::ptrdiff_t>(at + width));
  }
  return p;
}

std::string format_placement(const ExportedPlacement& p, const std::string& format,
                             const std::string& source) {
  std::ostringstream os;
  auto map = [&] {
    os << "[";
    for (size_t l = 0; l < p.physical_to_logical.size(); ++l) {
      os << (l ? ",\n  " : "\n  ") << "[";
      for (size_t i = 0; i < p.physical_to_logical[l].size(); ++i)
        os << (i ? ", " : "") << p.physical_to_logical[l][i];
      os << "]";
    }
    os << "\n]";
  };
  if (format == "sglang") {
    int64_t empty = 0;
    for (const auto& row : p.physical_to_logical)
      for (int64_t e : row) empty += e < 0;
    if (empty > 0)
      throw InputError(source + ": the placement of router " + p.router + " has " +
                       std::to_string(empty) +
                       " empty slots (-1); SGLang needs an expert in every physical slot (use a "
                       "replicating placement, e.g. "
                       "--placement eplb, or --format json)");
    os << "{\"physical_to_logical_map\": ";
    map();
    os << "}\n";
    return os.str();
  }
  std::string src;
  for (char c : source) src += c == '"' || c == '\\' ? std::string("\\") + c : std::string(1, c);
  os << "{\"format\": \"moebench-placement\", \"format_version\": 1, \"source\": \"" << src
     << "\", \"router\": \"" << p.router << "\", \"step\": " << p.step
     << ", \"experts\": " << p.experts << ", \"ep_size\": " << p.ep_size
     << ", \"slots_per_rank\": " << p.slots_per_rank
     << ", \"layers\": " << p.physical_to_logical.size() << ",\n \"physical_to_logical_map\": ";
  map();
  os << "}\n";
  return os.str();
}

int export_command(int argc, const char* const* argv, const Comm& world) {
  const std::string what = argc > 1 ? argv[1] : "";
  if (what.empty() || what == "--help" || what == "-h" || what == "help") {
    if (world.root()) std::printf("%s", kExportUsage);
    return what.empty() ? 2 : 0;
  }
  if (what != "matrix" && what != "placement")
    throw InputError("export: unknown kind '" + what + "' (known: matrix, placement)");
  std::string path, router, format, out, unit = "bytes";
  int64_t step = -1, layer = 0;
  bool force = false;
  auto value = [&](int& i, const std::string& name) -> std::string {
    if (i + 1 >= argc) throw InputError("export " + what + ": " + name + " needs a value");
    return argv[++i];
  };
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      if (world.root()) std::printf("%s", kExportUsage);
      return 0;
    }
    if (a == "--router")
      router = value(i, a);
    else if (a == "--step")
      step = index_option(a, value(i, a));
    else if (a == "--layer" && what == "matrix")
      layer = index_option(a, value(i, a));
    else if (a == "--what" && what == "matrix")
      unit = value(i, a);
    else if (a == "--format")
      format = value(i, a);
    else if (a == "--out")
      out = value(i, a);
    else if (a == "--force")
      force = true;
    else if (a.rfind("--", 0) == 0)
      throw InputError("export " + what + ": unknown option '" + a +
                       "' (known: --router, --step, " +
                       (what == "matrix" ? "--layer, --what, " : "") + "--format, --out, --force)");
    else if (path.empty())
      path = a;
    else
      throw InputError("export " + what + ": one results file expected, got '" + path + "' and '" +
                       a + "'");
  }
  if (path.empty())
    throw InputError("export " + what + ": expected a results file (moebench export " + what +
                     " RESULTS.h5 ...; --help)");
  if (!world.root()) return 0;
  if (what == "matrix") {
    if (format.empty()) format = "txt";
    if (format != "txt" && format != "csv")
      throw InputError("export matrix: --format '" + format + "' is not one of txt, csv");
    if (unit != "bytes" && unit != "tokens")
      throw InputError("export matrix: --what '" + unit + "' is not one of bytes, tokens");
    int64_t ranks = 0;
    const auto m = read_dispatch_matrix(path, router, step < 0 ? 0 : step, layer, unit, ranks);
    emit(format_matrix(m, ranks, format), out, force);
  } else {
    if (format != "sglang" && format != "json")
      throw InputError(
          "export placement: --format " +
          (format.empty() ? std::string("is required") : "'" + format + "' is not one of") +
          (format.empty() ? ": sglang or json" : " sglang, json"));
    emit(format_placement(read_placement(path, router, step), format, path), out, force);
  }
  return 0;
}

}  // namespace moe
