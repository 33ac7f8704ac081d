#include "harness/report/results_writer.hpp"

#include <filesystem>
#include <type_traits>

#include "harness/core/build_info.hpp"
#include "harness/core/error.hpp"
#include "harness/core/registry.hpp"
#include "harness/report/checkpoint.hpp"
#include "harness/report/schema.hpp"

namespace moe {

namespace {

using h5::check;
using h5::check_status;
using h5::Handle;

constexpr size_t kStatusLen = 16;

Handle create_extensible(hid_t loc, const std::string& path, hid_t type,
                         std::vector<hsize_t> inner) {
  std::vector<hsize_t> dims{0}, maxdims{H5S_UNLIMITED}, chunk{1};
  for (auto d : inner) {
    dims.push_back(d);
    maxdims.push_back(d);
    chunk.push_back(std::max<hsize_t>(d, 1));
  }
  Handle space(check(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), maxdims.data()),
                     "H5Screate_simple"),
               H5Sclose);
  Handle dcpl(check(H5Pcreate(H5P_DATASET_CREATE), "H5Pcreate"), H5Pclose);
  check_status(H5Pset_chunk(dcpl, static_cast<int>(chunk.size()), chunk.data()), "H5Pset_chunk");
  Handle lcpl(check(H5Pcreate(H5P_LINK_CREATE), "H5Pcreate"), H5Pclose);
  check_status(H5Pset_create_intermediate_group(lcpl, 1), "H5Pset_create_intermediate_group");
  return Handle(check(H5Dcreate2(loc, path.c_str(), type, space, lcpl, dcpl, H5P_DEFAULT),
                      ("H5Dcreate " + path).c_str()),
                H5Dclose);
}

// Extends `path` to `step + 1` rows and writes the block at `start`/`count` (count[0] == 1) from
// `buf`; a process with buf == nullptr takes part in the collective write with an empty selection.
void append_block(hid_t file, hid_t dxpl, const std::string& path, hid_t mem_type, int32_t step,
                  const std::vector<hsize_t>& start, const std::vector<hsize_t>& count,
                  const void* buf) {
  Handle d(check(H5Dopen2(file, path.c_str(), H5P_DEFAULT), ("H5Dopen " + path).c_str()), H5Dclose);
  {
    Handle space(check(H5Dget_space(d), "H5Dget_space"), H5Sclose);
    std::vector<hsize_t> dims(count.size());
    H5Sget_simple_extent_dims(space, dims.data(), nullptr);
    if (dims[0] < static_cast<hsize_t>(step) + 1) {
      dims[0] = static_cast<hsize_t>(step) + 1;
      check_status(H5Dset_extent(d, dims.data()), ("H5Dset_extent " + path).c_str());
    }
  }
  Handle fspace(check(H5Dget_space(d), "H5Dget_space"), H5Sclose);
  Handle mspace(check(H5Screate_simple(static_cast<int>(count.size()), count.data(), nullptr),
                      "H5Screate_simple"),
                H5Sclose);
  if (buf) {
    check_status(
        H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr),
        "H5Sselect_hyperslab");
  } else {
    check_status(H5Sselect_none(fspace), "H5Sselect_none");
    check_status(H5Sselect_none(mspace), "H5Sselect_none");
  }
  static const char dummy = 0;
  check_status(H5Dwrite(d, mem_type, mspace, fspace, dxpl, buf ? buf : &dummy),
               ("H5Dwrite " + path).c_str());
}

std::string group_of(const std::string& router) {
  return "/runs/" + router;
}

// The file access list of a results file: MPI-IO, and a metadata cache that holds a whole step's
// dirty metadata. Parallel HDF5 1.10 syncs the processes' metadata caches when the dirty metadata
// passes a threshold (256 KiB by default); a sync point that falls inside a collective chunked
// H5Dwrite fails there ("couldn't get chunk info from skipped list"), which a run with two routers
// and the per-rank datasets reached at step 65. With 8 MiB of room the sync points happen at the
// H5Fflush that ends each step, where every process is anyway.
Handle results_fapl(MPI_Comm comm) {
  Handle fapl(check(H5Pcreate(H5P_FILE_ACCESS), "H5Pcreate"), H5Pclose);
  check_status(H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL), "H5Pset_fapl_mpio");
  H5AC_cache_config_t mdc{};
  mdc.version = H5AC__CURR_CACHE_CONFIG_VERSION;
  check_status(H5Pget_mdc_config(fapl, &mdc), "H5Pget_mdc_config");
  mdc.set_initial_size = true;
  mdc.initial_size = 16 << 20;
  mdc.max_size = std::max<size_t>(mdc.max_size, 32 << 20);
  mdc.min_size = std::min<size_t>(mdc.min_size, mdc.initial_size);
  mdc.dirty_bytes_threshold = 8 << 20;
  check_status(H5Pset_mdc_config(fapl, &mdc), "H5Pset_mdc_config");
  return fapl;
}

}  // namespace

ResultsWriter::ResultsWriter(const ResultsFileInfo& info, const Comm& world)
    : info_(info), world_(world) {
  h5::silence_error_stack();
  if (info_.resume_steps_done >= 0) {
    open_for_resume();
    return;
  }
  refuse_to_overwrite("--out", info_.path, info_.force, world_);
  Handle fapl = results_fapl(world_.raw());
  const hid_t f = H5Fcreate(info_.path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
  if (f < 0)
    throw InputError("--out " + info_.path +
                     ": cannot create the file (does its folder exist and is it writable?)");
  file_ = Handle(f, H5Fclose);
  dxpl_ = Handle(check(H5Pcreate(H5P_DATASET_XFER), "H5Pcreate"), H5Pclose);
  check_status(H5Pset_dxpl_mpio(dxpl_, H5FD_MPIO_COLLECTIVE), "H5Pset_dxpl_mpio");

  // Root attributes: identical on every process (attribute writes are collective).
  h5::write_attr(file_, "format", schema::kFormatName);
  h5::write_attr(file_, "format_version", schema::kFormatVersion);
  h5::write_attr(file_, "moebench_version", MOEBENCH_VERSION);
  h5::write_attr(file_, "git_sha", MOEBENCH_GIT_SHA);
  h5::write_attr(file_, "command_line", info_.command_line);
  h5::write_attr(file_, "config", info_.config_json);
  h5::write_attr(file_, "topology", info_.topology_json);
  h5::write_attr(file_, "workload_source", info_.workload_source);
  if (!info_.count_sources.empty()) h5::write_attr(file_, "count_sources", info_.count_sources);
  h5::write_attr(file_, "world_size", static_cast<int64_t>(world_.size()));
  h5::write_attr(file_, "ep_size", static_cast<int64_t>(info_.topology.ep_size()));
  h5::write_attr(file_, "hosts", join(info_.hosts, ","));
  h5::write_attr(file_, "routers", join(info_.routers, ","));
  h5::write_attr(file_, "steps_planned", static_cast<int64_t>(info_.steps));
  h5::write_attr(file_, "layers", static_cast<int64_t>(info_.layers));
  h5::write_attr(file_, "experts", static_cast<int64_t>(info_.experts));
  h5::write_attr(file_, "status", "partial", kStatusLen);
  h5::write_attr(file_, "steps_done", int64_t{0});
  h5::write_attr(file_, "resumed", "");
  h5::write_attr(file_, "varying", schema::kVaryingFields);
  h5::write_attr(file_, "trace_tail", info_.trace_tail);
  h5::write_attr(file_, "trace_tail_params", info_.trace_tail_params);
  create_datasets();
  check_status(H5Fflush(file_, H5F_SCOPE_GLOBAL), "H5Fflush");
}

ResultsWriter::~ResultsWriter() = default;

// --resume: the file was checked by the caller (same configuration, datasets, checkpoint).
void ResultsWriter::open_for_resume() {
  Handle fapl = results_fapl(world_.raw());
  const hid_t f = H5Fopen(info_.path.c_str(), H5F_ACC_RDWR, fapl);
  if (f < 0) throw InputError("--resume " + info_.path + ": cannot open the file for writing");
  file_ = Handle(f, H5Fclose);
  dxpl_ = Handle(check(H5Pcreate(H5P_DATASET_XFER), "H5Pcreate"), H5Pclose);
  check_status(H5Pset_dxpl_mpio(dxpl_, H5FD_MPIO_COLLECTIVE), "H5Pset_dxpl_mpio");
  steps_done_ = info_.resume_steps_done;
  h5::write_attr(file_, "config", info_.config_json);  // --steps may have been raised
  h5::write_attr(file_, "steps_planned", static_cast<int64_t>(info_.steps));
  h5::write_attr(file_, "status", "partial", kStatusLen);
  const std::string before =
      h5::has_attr(file_, "resumed") ? h5::read_attr_string(file_, "resumed") : "";
  h5::write_attr(file_, "resumed", before + (before.empty() ? "" : "; ") + info_.resume_note);
  check_status(H5Fflush(file_, H5F_SCOPE_GLOBAL), "H5Fflush");
}

void ResultsWriter::create_datasets() {
  const hsize_t L = static_cast<hsize_t>(info_.layers);
  const hsize_t E = static_cast<hsize_t>(info_.experts);
  const hsize_t R = static_cast<hsize_t>(info_.topology.ep_size());
  {  // Static placement: expert -> rank, and rank -> node.
    const hsize_t dims_e[1] = {E};
    Handle s(check(H5Screate_simple(1, dims_e, nullptr), "H5Screate_simple"), H5Sclose);
    Handle lcpl(check(H5Pcreate(H5P_LINK_CREATE), "H5Pcreate"), H5Pclose);
    check_status(H5Pset_create_intermediate_group(lcpl, 1), "H5Pset_create_intermediate_group");
    Handle d(check(H5Dcreate2(file_, "/placement/rank_of_expert", H5T_STD_I32LE, s, lcpl,
                              H5P_DEFAULT, H5P_DEFAULT),
                   "H5Dcreate"),
             H5Dclose);
    Handle fs(check(H5Dget_space(d), "H5Dget_space"), H5Sclose);
    Handle ms(check(H5Screate_simple(1, dims_e, nullptr), "H5Screate_simple"), H5Sclose);
    check_status(
        H5Dwrite(d, H5T_NATIVE_INT32, ms, fs, dxpl_, info_.placement.rank_of_expert.data()),
        "H5Dwrite rank_of_expert");
  }
  for (size_t ri = 0; ri < info_.routers.size(); ++ri) {
    const std::string g = group_of(info_.routers[ri]);
    for (const auto& f : schema::kIntFields)
      create_extensible(file_, g + "/" + f.name, H5T_STD_I64LE, {L});
    for (const auto& f : schema::kRealFields)
      create_extensible(file_, g + "/" + f.name, H5T_IEEE_F64LE, {L});
    if (ri < info_.figure_names.size())
      for (const auto& name : info_.figure_names[ri])
        create_extensible(file_, g + "/figures/" + name, H5T_IEEE_F64LE, {L});
    create_extensible(file_, g + "/expert_demand", H5T_STD_I64LE, {L, E});
    create_extensible(file_, g + "/expert_load", H5T_STD_I64LE, {L, E});
    create_extensible(file_, g + "/active_experts_hist", H5T_STD_I64LE, {L, E + 1});
    create_extensible(file_, g + "/rank_recv_tokens", H5T_STD_I64LE, {L, R});
    create_extensible(file_, g + "/rank_load", H5T_STD_I64LE, {L, R});
    create_extensible(file_, g + "/rank_send_bytes", H5T_STD_I64LE, {L, R, 3});
    create_extensible(file_, g + "/rank_recv_bytes", H5T_STD_I64LE, {L, R, 3});
    create_extensible(file_, g + "/expert_recv_bytes", H5T_STD_I64LE, {L, E, 3});
    const hsize_t N = static_cast<hsize_t>(info_.topology.nodes);
    create_extensible(file_, g + "/ranks_per_token_hist", H5T_STD_I64LE, {L, std::min(E, R) + 1});
    create_extensible(file_, g + "/nodes_per_token_hist", H5T_STD_I64LE, {L, std::min(E, N) + 1});
    create_extensible(file_, g + "/node_recv_tokens", H5T_STD_I64LE,
                      {L, static_cast<hsize_t>(info_.topology.nodes)});
    create_extensible(file_, g + "/expert_of_slot", H5T_STD_I64LE,
                      {L, R * static_cast<hsize_t>(info_.placement.slots_per_rank)});
    if (ri < info_.train_balancedness.size() && !info_.train_balancedness[ri].empty()) {
      const auto& v = info_.train_balancedness[ri];
      const hsize_t n = v.size();
      Handle sp(check(H5Screate_simple(1, &n, nullptr), "H5Screate_simple"), H5Sclose);
      const std::string path = g + "/train_gpu_balancedness";
      Handle d(check(H5Dcreate2(file_, path.c_str(), H5T_IEEE_F64LE, sp, H5P_DEFAULT, H5P_DEFAULT,
                                H5P_DEFAULT),
                     "H5Dcreate"),
               H5Dclose);
      check_status(H5Dwrite(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, dxpl_, v.data()),
                   "H5Dwrite train_gpu_balancedness");
    }
    {  // whether this router's routing read logits the trace did not record (--trace-tail)
      Handle grp(check(H5Gopen2(file_, g.c_str(), H5P_DEFAULT), "H5Gopen2"), H5Gclose);
      h5::write_attr(grp, "tail_completed",
                     int64_t{ri < info_.tail_used.size() && info_.tail_used[ri] ? 1 : 0});
    }
    if (info_.save_dispatch_matrix) {
      create_extensible(file_, g + "/dispatch_tokens", H5T_STD_I64LE, {L, R, R});
      create_extensible(file_, g + "/dispatch_bytes", H5T_STD_I64LE, {L, R, R});
    }
    if (info_.measured) {
      for (const char* name : {"rank_dispatch_s", "rank_combine_s"})
        create_extensible(file_, g + "/" + name, H5T_IEEE_F64LE, {L, R});
      for (const char* name : {"tokens_sent", "tokens_received", "tokens_lost", "tokens_corrupted"})
        create_extensible(file_, g + "/" + name, H5T_STD_I64LE, {L, R});
    }
  }
}

void ResultsWriter::write_step(int32_t step,
                               const std::vector<std::vector<StepLayerMetrics>>& records,
                               const std::vector<std::vector<TrafficMatrix>>& matrices,
                               const std::vector<char>* state) {
  const size_t L = static_cast<size_t>(info_.layers);
  const hsize_t R = static_cast<hsize_t>(info_.topology.ep_size());
  const hsize_t s = static_cast<hsize_t>(step);
  for (size_t ri = 0; ri < info_.routers.size(); ++ri) {
    const std::string g = group_of(info_.routers[ri]);
    const auto& rec = records.at(ri);
    if (rec.size() != L) fail("write_step: expected one record per layer");
    // Group-wide values (identical on every process): every process writes the same block, so that
    // every process makes the same chunk lookups (a metadata-cache sync point reached by one
    // process only would deadlock the collective write).
    for (const auto& f : schema::kIntFields) {
      std::vector<int64_t> row(L);
      for (size_t l = 0; l < L; ++l) row[l] = rec[l].*(f.member);
      append_block(file_, dxpl_, g + "/" + f.name, H5T_NATIVE_INT64, step, {s, 0}, {1, L},
                   row.data());
    }
    for (const auto& f : schema::kRealFields) {
      std::vector<double> row(L);
      for (size_t l = 0; l < L; ++l) row[l] = rec[l].*(f.member);
      append_block(file_, dxpl_, g + "/" + f.name, H5T_NATIVE_DOUBLE, step, {s, 0}, {1, L},
                   row.data());
    }
    const auto& fig_names =
        ri < info_.figure_names.size() ? info_.figure_names[ri] : std::vector<std::string>{};
    for (size_t fi = 0; fi < fig_names.size(); ++fi) {
      std::vector<double> row(L);
      for (size_t l = 0; l < L; ++l) row[l] = rec[l].figures.at(fi);
      append_block(file_, dxpl_, g + "/figures/" + fig_names[fi], H5T_NATIVE_DOUBLE, step, {s, 0},
                   {1, L}, row.data());
    }
    auto per_layer = [&](const char* name, std::vector<int64_t> StepLayerMetrics::*member) {
      const hsize_t n = (rec[0].*member).size();
      std::vector<int64_t> block;
      for (size_t l = 0; l < L; ++l)
        block.insert(block.end(), (rec[l].*member).begin(), (rec[l].*member).end());
      append_block(file_, dxpl_, g + "/" + name, H5T_NATIVE_INT64, step, {s, 0, 0}, {1, L, n},
                   block.data());
    };
    per_layer("expert_demand", &StepLayerMetrics::expert_demand);
    per_layer("expert_load", &StepLayerMetrics::expert_load);
    per_layer("active_experts_hist", &StepLayerMetrics::active_experts_hist);
    per_layer("node_recv_tokens", &StepLayerMetrics::node_recv_tokens);
    per_layer("expert_of_slot", &StepLayerMetrics::expert_of_slot);
    per_layer("ranks_per_token_hist", &StepLayerMetrics::ranks_per_token_hist);
    per_layer("nodes_per_token_hist", &StepLayerMetrics::nodes_per_token_hist);
    {
      std::vector<int64_t> block;
      for (size_t l = 0; l < L; ++l)
        block.insert(block.end(), rec[l].expert_recv_bytes.begin(), rec[l].expert_recv_bytes.end());
      const hsize_t E = static_cast<hsize_t>(info_.experts);
      append_block(file_, dxpl_, g + "/expert_recv_bytes", H5T_NATIVE_INT64, step, {s, 0, 0, 0},
                   {1, L, E, 3}, block.data());
    }
    // Per-rank rows: every process writes the EP ranks it hosts.
    const hsize_t r0 = static_cast<hsize_t>(info_.first_rank),
                  nr = static_cast<hsize_t>(info_.num_ranks);
    {
      std::vector<int64_t> block(L * nr);
      for (size_t l = 0; l < L; ++l)
        for (hsize_t r = 0; r < nr; ++r) block[l * nr + r] = rec[l].rank_recv_tokens.at(r0 + r);
      append_block(file_, dxpl_, g + "/rank_recv_tokens", H5T_NATIVE_INT64, step, {s, 0, r0},
                   {1, L, nr}, block.data());
      for (size_t l = 0; l < L; ++l)
        for (hsize_t r = 0; r < nr; ++r) block[l * nr + r] = rec[l].rank_load.at(r0 + r);
      append_block(file_, dxpl_, g + "/rank_load", H5T_NATIVE_INT64, step, {s, 0, r0}, {1, L, nr},
                   block.data());
      for (const auto& [name, member] :
           {std::pair{"rank_send_bytes", &StepLayerMetrics::rank_send_bytes},
            std::pair{"rank_recv_bytes", &StepLayerMetrics::rank_recv_bytes}}) {
        std::vector<int64_t> b3(L * nr * 3);
        for (size_t l = 0; l < L; ++l)
          std::copy_n((rec[l].*member).begin() + static_cast<std::ptrdiff_t>(r0 * 3), nr * 3,
                      b3.begin() + static_cast<std::ptrdiff_t>(l * nr * 3));
        append_block(file_, dxpl_, g + "/" + name, H5T_NATIVE_INT64, step, {s, 0, r0, 0},
                     {1, L, nr, 3}, b3.data());
      }
    }
    if (info_.measured) {
      auto rank_rows = [&](const std::string& name, hid_t type, auto member) {
        using T = typename std::decay_t<decltype(rec[0].*member)>::value_type;
        std::vector<T> block(L * nr);
        for (size_t l = 0; l < L; ++l)
          for (hsize_t r = 0; r < nr; ++r) block[l * nr + r] = (rec[l].*member).at(r0 + r);
        append_block(file_, dxpl_, g + "/" + name, type, step, {s, 0, r0}, {1, L, nr},
                     block.data());
      };
      rank_rows("rank_dispatch_s", H5T_NATIVE_DOUBLE, &StepLayerMetrics::rank_dispatch_s);
      rank_rows("rank_combine_s", H5T_NATIVE_DOUBLE, &StepLayerMetrics::rank_combine_s);
      rank_rows("tokens_sent", H5T_NATIVE_INT64, &StepLayerMetrics::tokens_sent);
      rank_rows("tokens_received", H5T_NATIVE_INT64, &StepLayerMetrics::tokens_received);
      rank_rows("tokens_lost", H5T_NATIVE_INT64, &StepLayerMetrics::tokens_lost);
      rank_rows("tokens_corrupted", H5T_NATIVE_INT64, &StepLayerMetrics::tokens_corrupted);
    }
    if (info_.save_dispatch_matrix) {
      const auto& mats = matrices.at(ri);
      std::vector<int64_t> block(L * nr * R);
      for (size_t l = 0; l < L; ++l)
        std::copy(mats.at(l).tokens.begin() + static_cast<std::ptrdiff_t>(r0 * R),
                  mats.at(l).tokens.begin() + static_cast<std::ptrdiff_t>((r0 + nr) * R),
                  block.begin() + static_cast<std::ptrdiff_t>(l * nr * R));
      append_block(file_, dxpl_, g + "/dispatch_tokens", H5T_NATIVE_INT64, step, {s, 0, r0, 0},
                   {1, L, nr, R}, block.data());
      for (size_t l = 0; l < L; ++l)
        std::copy(mats.at(l).bytes.begin() + static_cast<std::ptrdiff_t>(r0 * R),
                  mats.at(l).bytes.begin() + static_cast<std::ptrdiff_t>((r0 + nr) * R),
                  block.begin() + static_cast<std::ptrdiff_t>(l * nr * R));
      append_block(file_, dxpl_, g + "/dispatch_bytes", H5T_NATIVE_INT64, step, {s, 0, r0, 0},
                   {1, L, nr, R}, block.data());
    }
  }
  if (state) write_checkpoint(file_, dxpl_, step + 1, *state, world_);
  // Two flushes: the step's data (and checkpoint) reach the file before steps_done names the step,
  // so a process killed inside a flush never leaves a steps_done that counts unwritten rows.
  check_status(H5Fflush(file_, H5F_SCOPE_GLOBAL), "H5Fflush");
  steps_done_ = step + 1;
  h5::write_attr(file_, "steps_done", static_cast<int64_t>(steps_done_));
  check_status(H5Fflush(file_, H5F_SCOPE_GLOBAL), "H5Fflush");
}

void ResultsWriter::finish(const std::string& status) {
  h5::write_attr(file_, "status",
                 !status.empty()              ? status
                 : steps_done_ == info_.steps ? "complete"
                                              : "partial",
                 kStatusLen);
  check_status(H5Fflush(file_, H5F_SCOPE_GLOBAL), "H5Fflush");
  file_.reset();
}

}  // namespace moe
