#include "harness/driver/resume.hpp"

#include <algorithm>
#include <csignal>
#include <filesystem>
#include <map>

#include "harness/core/error.hpp"
#include "harness/report/checkpoint.hpp"
#include "harness/report/h5.hpp"
#include "harness/report/schema.hpp"

namespace moe {

namespace {

volatile std::sig_atomic_t g_stop_signal = 0;

extern "C" void on_stop_signal(int sig) {
  if (g_stop_signal == 0) g_stop_signal = sig;
}

// Top-level "key":value pairs of a JSON object, values as their text (nested objects whole).
std::map<std::string, std::string> top_level(const std::string& json) {
  std::map<std::string, std::string> out;
  size_t i = json.find('{');
  if (i == std::string::npos) return out;
  ++i;
  while (i < json.size()) {
    while (i < json.size() && (json[i] == ',' || json[i] == ' ')) ++i;
    if (i >= json.size() || json[i] != '"') break;
    const size_t k0 = ++i;
    while (i < json.size() && json[i] != '"') i += json[i] == '\\' ? 2 : 1;
    const std::string key = json.substr(k0, i - k0);
    i = json.find(':', i);
    if (i == std::string::npos) break;
    const size_t v0 = ++i;
    int depth = 0;
    bool in_str = false;
    for (; i < json.size(); ++i) {
      const char c = json[i];
      if (in_str) {
        if (c == '\\')
          ++i;
        else if (c == '"')
          in_str = false;
      } else if (c == '"') {
        in_str = true;
      } else if (c == '{' || c == '[') {
        ++depth;
      } else if (c == '}' || c == ']') {
        if (depth == 0) break;
        --depth;
      } else if (c == ',' && depth == 0) {
        break;
      }
    }
    out[key] = json.substr(v0, i - v0);
    if (i < json.size() && json[i] == '}') break;
  }
  return out;
}

std::string option_name(const std::string& key) {
  if (key == "router_args") return "--router-arg";
  if (key == "workload_args") return "--workload-arg";
  std::string o = "--" + key;
  for (auto& c : o)
    if (c == '_') c = '-';
  return o;
}

constexpr char kMagic[8] = {'M', 'O', 'E', 'C', 'K', 'P', 'T', '1'};

}  // namespace

std::vector<std::string> config_differences(const std::string& file_json,
                                            const std::string& run_json) {
  const auto a = top_level(file_json), b = top_level(run_json);
  std::vector<std::string> out;
  for (const auto& [k, v] : b) {
    if (k == "steps") continue;
    const auto it = a.find(k);
    const std::string was = it == a.end() ? "unset" : it->second;
    if (was != v) out.push_back(option_name(k) + " (file " + was + ", now " + v + ")");
  }
  for (const auto& [k, v] : a)
    if (!b.count(k) && k != "steps")
      out.push_back(option_name(k) + " (file " + v + ", unknown to this moebench)");
  return out;
}

namespace {

struct CopyVisit {
  std::vector<std::string> datasets;
};

herr_t collect_dataset(hid_t, const char* name, const H5O_info_t* info, void* data) {
  if (info->type == H5O_TYPE_DATASET)
    static_cast<CopyVisit*>(data)->datasets.push_back(std::string("/") + name);
  return 0;
}

// Copies the first `rows` rows of dataset `path` (all rows when rows < 0) from `from` into `to`,
// creating it there like the original when missing.
void copy_rows(hid_t from, hid_t to, const std::string& path, int64_t rows,
               const std::string& where) {
  using h5::check;
  using h5::check_status;
  using h5::Handle;
  Handle src(check(H5Dopen2(from, path.c_str(), H5P_DEFAULT), "H5Dopen"), H5Dclose);
  Handle type(check(H5Dget_type(src), "H5Dget_type"), H5Tclose);
  Handle sspace(check(H5Dget_space(src), "H5Dget_space"), H5Sclose);
  const int nd = H5Sget_simple_extent_ndims(sspace);
  if (nd < 0) throw InputError(where + path + ": unreadable dataspace");
  std::vector<hsize_t> dims(static_cast<size_t>(std::max(nd, 1)), 1);
  if (nd > 0) H5Sget_simple_extent_dims(sspace, dims.data(), nullptr);
  if (nd > 0 && rows >= 0) {
    if (static_cast<hsize_t>(rows) > dims[0])
      throw InputError(where + path + " has " + std::to_string(dims[0]) +
                       " rows, fewer than steps_done");
    dims[0] = static_cast<hsize_t>(rows);
  }
  Handle dst;
  if (h5::has_link(to, path)) {
    dst = Handle(check(H5Dopen2(to, path.c_str(), H5P_DEFAULT), "H5Dopen"), H5Dclose);
    Handle dspace(check(H5Dget_space(dst), "H5Dget_space"), H5Sclose);
    std::vector<hsize_t> have(dims.size(), 0);
    if (nd > 0 && H5Sget_simple_extent_ndims(dspace) == nd)
      H5Sget_simple_extent_dims(dspace, have.data(), nullptr);
    if (nd > 0 && have != dims)
      check_status(H5Dset_extent(dst, dims.data()), ("H5Dset_extent " + path).c_str());
  } else {
    Handle dcpl(check(H5Dget_create_plist(src), "H5Dget_create_plist"), H5Pclose);
    Handle lcpl(check(H5Pcreate(H5P_LINK_CREATE), "H5Pcreate"), H5Pclose);
    check_status(H5Pset_create_intermediate_group(lcpl, 1), "H5Pset_create_intermediate_group");
    Handle maxspace(check(H5Dget_space(src), "H5Dget_space"), H5Sclose);
    std::vector<hsize_t> maxdims(dims.size(), 0);
    if (nd > 0) H5Sget_simple_extent_dims(maxspace, nullptr, maxdims.data());
    Handle space(nd > 0
                     ? check(H5Screate_simple(nd, dims.data(), maxdims.data()), "H5Screate_simple")
                     : check(H5Screate(H5S_SCALAR), "H5Screate"),
                 H5Sclose);
    dst = Handle(check(H5Dcreate2(to, path.c_str(), type, space, lcpl, dcpl, H5P_DEFAULT),
                       ("H5Dcreate " + path).c_str()),
                 H5Dclose);
  }
  // Row blocks of at most 64 MiB: a results file may be far larger than memory.
  hsize_t row_bytes = H5Tget_size(type);
  for (int i = 1; i < nd; ++i) row_bytes *= dims[static_cast<size_t>(i)];
  const hsize_t total_rows = nd > 0 ? dims[0] : 1;
  if (row_bytes == 0 || total_rows == 0) return;
  const hsize_t block = std::max<hsize_t>(1, (hsize_t{64} << 20) / row_bytes);
  std::vector<char> buf;
  for (hsize_t r0 = 0; r0 < total_rows; r0 += block) {
    std::vector<hsize_t> start(dims.size(), 0), count = dims;
    if (nd > 0) {
      start[0] = r0;
      count[0] = std::min(block, total_rows - r0);
    }
    buf.resize(static_cast<size_t>(row_bytes * (nd > 0 ? count[0] : 1)));
    Handle fsel(check(H5Dget_space(src), "H5Dget_space"), H5Sclose);
    Handle dsel(check(H5Dget_space(dst), "H5Dget_space"), H5Sclose);
    Handle msel(nd > 0 ? check(H5Screate_simple(nd, count.data(), nullptr), "H5Screate_simple")
                       : check(H5Screate(H5S_SCALAR), "H5Screate"),
                H5Sclose);
    if (nd > 0) {
      check_status(
          H5Sselect_hyperslab(fsel, H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr),
          "H5Sselect_hyperslab");
      check_status(
          H5Sselect_hyperslab(dsel, H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr),
          "H5Sselect_hyperslab");
    }
    if (H5Dread(src, type, msel, fsel, H5P_DEFAULT, buf.data()) < 0)
      throw InputError(where + "cannot read " + path + " (damaged before its last complete step?)");
    check_status(H5Dwrite(dst, type, msel, dsel, H5P_DEFAULT, buf.data()),
                 ("H5Dwrite " + path).c_str());
  }
}

}  // namespace

void rebuild_for_resume(const ResultsFileInfo& info, int32_t steps_done) {
  const std::string where = "--resume " + info.path + ": ";
  const std::string tmp = info.path + ".resume.tmp";
  h5::silence_error_stack();
  const hid_t f = H5Fopen(info.path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0) throw InputError(where + "cannot open the HDF5 file");
  h5::Handle old(f, H5Fclose);
  CopyVisit visit;
  if (H5Ovisit(old, H5_INDEX_NAME, H5_ITER_NATIVE, collect_dataset, &visit) < 0)
    throw InputError(where + "cannot list its datasets (damaged?)");
  try {
    ResultsFileInfo fresh = info;
    fresh.path = tmp;
    fresh.force = true;
    fresh.resume_steps_done = -1;
    fresh.first_rank = 0;
    fresh.num_ranks = info.topology.ep_size();
    ResultsWriter writer(fresh, Comm::self());
    hid_t to = writer.file();
    const std::string slot = "/checkpoint/slot" + std::to_string(steps_done % 2);
    for (const auto& path : visit.datasets) {
      if (path.rfind("/checkpoint/", 0) == 0) {
        if (path.rfind(slot + "/", 0) == 0) copy_rows(old, to, path, -1, where);
      } else {
        copy_rows(old, to, path, path.rfind("/runs/", 0) == 0 ? steps_done : -1, where);
      }
    }
    if (h5::has_link(old, slot)) {
      h5::Handle g(h5::check(H5Gopen2(to, slot.c_str(), H5P_DEFAULT), "H5Gopen"), H5Gclose);
      h5::write_attr(g, "steps_done", static_cast<int64_t>(steps_done));
      h5::write_attr(g, "world_size", h5::read_attr_int(old, "world_size"));
    }
    for (const char* a : {"command_line", "resumed"})
      if (h5::has_attr(old, a)) h5::write_attr(to, a, h5::read_attr_string(old, a));
    h5::write_attr(to, "steps_done", static_cast<int64_t>(steps_done));
    h5::write_attr(to, "world_size",
                   h5::read_attr_int(old, "world_size"));  // the writer above ran on one process
    writer.close();
  } catch (...) {
    std::error_code ec;
    std::filesystem::remove(tmp, ec);
    throw;
  }
  old.reset();
  std::error_code ec;
  std::filesystem::rename(tmp, info.path, ec);
  if (ec)
    throw InputError(where + "cannot replace it with the rewritten " + tmp + ": " + ec.message());
}

std::vector<char> pack_state(const std::vector<std::unique_ptr<Router>>& routers,
                             const std::vector<std::string>& names,
                             const std::vector<PlacementPlanner>& planners) {
  std::vector<char> blob;
  StateWriter w(blob);
  for (char c : kMagic) w.put(c);
  w.put(static_cast<uint64_t>(routers.size()));
  std::vector<char> part;
  for (size_t i = 0; i < routers.size(); ++i) {
    part.clear();
    StateWriter pw(part);
    routers[i]->save_state(pw);
    w.put_vec(std::vector<char>(names[i].begin(), names[i].end()));
    w.put_bytes(part);
    part.clear();
    planners[i].save_state(pw);
    w.put_bytes(part);
  }
  return blob;
}

void unpack_state(const std::vector<char>& blob, const std::string& path,
                  const std::vector<std::unique_ptr<Router>>& routers,
                  const std::vector<std::string>& names, std::vector<PlacementPlanner>& planners) {
  const std::string where = "--resume " + path;
  StateReader r(blob.data(), blob.size(), where);
  for (char c : kMagic)
    if (r.get<char>() != c) r.bad("not a moebench checkpoint");
  if (r.get<uint64_t>() != routers.size()) r.bad("router count");
  std::vector<char> name, part;
  for (size_t i = 0; i < routers.size(); ++i) {
    r.get_vec(name);
    if (std::string(name.begin(), name.end()) != names[i])
      r.bad("router " + std::to_string(i) + " is not " + names[i]);
    r.get_bytes(part);
    StateReader rr(part.data(), part.size(), where + ": router " + names[i]);
    routers[i]->load_state(rr);
    rr.expect_done();
    r.get_bytes(part);
    StateReader pr(part.data(), part.size(), where + ": placement planner of " + names[i]);
    planners[i].load_state(pr);
    pr.expect_done();
  }
  r.expect_done();
}

ResumePoint prepare_resume(const RunConfig& cfg, const Comm& world) {
  ResumePoint rp;
  const std::string& path = cfg.out;
  const std::string where = "--resume " + path + ": ";
  std::string error;  // decided on rank 0, the same on every rank
  std::string status;
  int64_t steps_done = 0;
  if (world.root()) {
    try {
      std::error_code ec;
      if (!std::filesystem::exists(path, ec)) {
        steps_done = -1;  // nothing to resume: a new run
      } else if (H5Fis_hdf5(path.c_str()) <= 0) {
        error = where + "not an HDF5 file, so not a moebench results file to resume";
      } else {
        h5::silence_error_stack();
        const hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
        if (f < 0) throw InputError(where + "cannot open the HDF5 file (damaged?)");
        h5::Handle file(f, H5Fclose);
        if (!h5::has_attr(file, "format") ||
            h5::read_attr_string(file, "format") != schema::kFormatName)
          throw InputError(where + "not a moebench results file (no format = " +
                           schema::kFormatName + " attribute)");
        const int64_t version =
            h5::has_attr(file, "format_version") ? h5::read_attr_int(file, "format_version") : -1;
        if (version != schema::kFormatVersion)
          throw InputError(where + "results format_version " + std::to_string(version) +
                           ", this moebench writes version " +
                           std::to_string(schema::kFormatVersion));
        for (const char* a : {"config", "status", "steps_done", "world_size"})
          if (!h5::has_attr(file, a))
            throw InputError(where + "the file has no '" + a + "' attribute");
        const auto diff = config_differences(h5::read_attr_string(file, "config"), cfg.to_json());
        if (!diff.empty()) {
          std::string list;
          for (const auto& d : diff) list += (list.empty() ? "" : ", ") + d;
          throw InputError(where + "written with another configuration: " + list +
                           " (only --steps may change)");
        }
        status = h5::read_attr_string(file, "status");
        steps_done = h5::read_attr_int(file, "steps_done");
        const int64_t ws = h5::read_attr_int(file, "world_size");
        if (ws != world.size())
          throw InputError(where + "written by " + std::to_string(ws) +
                           " processes; resume it with as many (mpirun -np " + std::to_string(ws) +
                           "), not " + std::to_string(world.size()));
        if (steps_done > cfg.steps)
          throw InputError(where + "holds " + std::to_string(steps_done) +
                           " steps, more than --steps " + std::to_string(cfg.steps) +
                           " (--steps may only be raised)");
        if (steps_done > 0)
          (void)read_checkpoint(file, path, steps_done, 0, world.size());  // checks the slot
      }
    } catch (const Error& e) {
      error = e.what();
    }
  }
  std::vector<int64_t> head{static_cast<int64_t>(error.size()), steps_done,
                            static_cast<int64_t>(status.size())};
  if (!world.root()) std::fill(head.begin(), head.end(), 0);
  world.sum(head);
  std::string text = error + status;
  text.resize(static_cast<size_t>(head[0] + head[2]));
  world.bcast(std::span<char>(text.data(), text.size()), 0);
  if (head[0] > 0) throw InputError(text.substr(0, static_cast<size_t>(head[0])));
  status = text.substr(static_cast<size_t>(head[0]));
  steps_done = head[1];
  if (steps_done < 0) {
    rp.note = "--resume: " + path + " does not exist yet; starting a new run";
    return rp;
  }
  if (steps_done == 0) {
    rp.note =
        "--resume: " + path + " holds no complete step (status " + status + "); starting it again";
    return rp;
  }
  rp.resume = true;
  rp.steps_done = static_cast<int32_t>(steps_done);
  rp.status = status;
  {
    h5::silence_error_stack();
    const hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) fail(where + "cannot open the HDF5 file");
    h5::Handle file(f, H5Fclose);
    rp.state = read_checkpoint(file, path, steps_done, world.rank(), world.size());
  }
  world.barrier();  // every process has read before the file is opened for writing
  rp.note = "resumed after step " + std::to_string(steps_done) + " of " +
            std::to_string(cfg.steps) + " (file status " + status + ")";
  return rp;
}

void throw_write_failure(const std::string& path, int32_t steps_done, const std::exception& e) {
  std::error_code ec;
  const auto dir = std::filesystem::path(path).parent_path().empty()
                       ? std::filesystem::path(".")
                       : std::filesystem::path(path).parent_path();
  std::string cause;
  if (!std::filesystem::exists(path, ec))
    cause = "the file or its folder was removed";
  else if (const auto sp = std::filesystem::space(dir, ec);
           !ec && sp.available < (uint64_t{1} << 20))
    cause = "no space left on its file system";
  else
    cause = std::string("the write failed: ") + e.what();
  throw Error("--out " + path + ": cannot write step " + std::to_string(steps_done + 1) + " (" +
              cause + "); the file keeps " + std::to_string(steps_done) +
              " complete steps: free space, then run the same command with --resume");
}

void check_out_exists(const std::string& path, int32_t steps_done) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec))
    throw Error("--out " + path + ": the file was removed during the run (after step " +
                std::to_string(steps_done) + "); its results are lost");
}

void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
}

int stop_signal() {
  return static_cast<int>(g_stop_signal);
}

}  // namespace moe
