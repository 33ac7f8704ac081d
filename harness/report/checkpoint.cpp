#include "harness/report/checkpoint.hpp"

#include <string>

#include "harness/core/error.hpp"
#include "harness/report/h5.hpp"

namespace moe {

namespace {

using h5::check;
using h5::check_status;
using h5::Handle;

std::string slot_path(int64_t steps_done) {
  return "/checkpoint/slot" + std::to_string(steps_done % 2);
}

Handle open_or_create_group(hid_t file, const std::string& path) {
  if (h5::has_link(file, path))
    return Handle(check(H5Gopen2(file, path.c_str(), H5P_DEFAULT), "H5Gopen"), H5Gclose);
  Handle lcpl(check(H5Pcreate(H5P_LINK_CREATE), "H5Pcreate"), H5Pclose);
  check_status(H5Pset_create_intermediate_group(lcpl, 1), "H5Pset_create_intermediate_group");
  return Handle(check(H5Gcreate2(file, path.c_str(), lcpl, H5P_DEFAULT, H5P_DEFAULT), "H5Gcreate"),
                H5Gclose);
}

}  // namespace

void write_checkpoint(hid_t file, hid_t dxpl, int64_t steps_done, const std::vector<char>& blob,
                      const Comm& world) {
  const int P = world.size();
  std::vector<int64_t> sizes(static_cast<size_t>(P), 0);
  sizes[static_cast<size_t>(world.rank())] = static_cast<int64_t>(blob.size());
  world.sum(sizes);
  std::vector<int64_t> offsets(static_cast<size_t>(P) + 1, 0);
  for (int r = 0; r < P; ++r) offsets[r + 1] = offsets[r] + sizes[r];
  const Handle g = open_or_create_group(file, slot_path(steps_done));
  // state: extensible uint8, sized to this checkpoint
  if (!h5::has_link(g, "state")) {
    const hsize_t dims[1] = {0}, maxdims[1] = {H5S_UNLIMITED}, chunk[1] = {hsize_t{1} << 16};
    Handle space(check(H5Screate_simple(1, dims, maxdims), "H5Screate_simple"), H5Sclose);
    Handle dcpl(check(H5Pcreate(H5P_DATASET_CREATE), "H5Pcreate"), H5Pclose);
    check_status(H5Pset_chunk(dcpl, 1, chunk), "H5Pset_chunk");
    Handle d(check(H5Dcreate2(g, "state", H5T_STD_U8LE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT),
                   "H5Dcreate checkpoint state"),
             H5Dclose);
    const hsize_t odims[1] = {static_cast<hsize_t>(P) + 1};
    Handle ospace(check(H5Screate_simple(1, odims, nullptr), "H5Screate_simple"), H5Sclose);
    Handle o(check(H5Dcreate2(g, "offsets", H5T_STD_I64LE, ospace, H5P_DEFAULT, H5P_DEFAULT,
                              H5P_DEFAULT),
                   "H5Dcreate checkpoint offsets"),
             H5Dclose);
  }
  {
    Handle d(check(H5Dopen2(g, "state", H5P_DEFAULT), "H5Dopen checkpoint state"), H5Dclose);
    const hsize_t total[1] = {static_cast<hsize_t>(offsets.back())};
    check_status(H5Dset_extent(d, total), "H5Dset_extent checkpoint state");
    Handle fspace(check(H5Dget_space(d), "H5Dget_space"), H5Sclose);
    const hsize_t n[1] = {static_cast<hsize_t>(blob.size())};
    const hsize_t start[1] = {static_cast<hsize_t>(offsets[static_cast<size_t>(world.rank())])};
    Handle mspace(check(H5Screate_simple(1, n, nullptr), "H5Screate_simple"), H5Sclose);
    if (!blob.empty()) {
      check_status(H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, nullptr, n, nullptr),
                   "H5Sselect_hyperslab");
    } else {
      check_status(H5Sselect_none(fspace), "H5Sselect_none");
      check_status(H5Sselect_none(mspace), "H5Sselect_none");
    }
    static const char dummy = 0;
    check_status(
        H5Dwrite(d, H5T_NATIVE_UCHAR, mspace, fspace, dxpl, blob.empty() ? &dummy : blob.data()),
        "H5Dwrite checkpoint state");
  }
  {
    Handle d(check(H5Dopen2(g, "offsets", H5P_DEFAULT), "H5Dopen checkpoint offsets"), H5Dclose);
    Handle fspace(check(H5Dget_space(d), "H5Dget_space"), H5Sclose);
    const hsize_t n[1] = {static_cast<hsize_t>(P) + 1};
    Handle mspace(check(H5Screate_simple(1, n, nullptr), "H5Screate_simple"), H5Sclose);
    if (!world.root()) {
      check_status(H5Sselect_none(fspace), "H5Sselect_none");
      check_status(H5Sselect_none(mspace), "H5Sselect_none");
    }
    check_status(H5Dwrite(d, H5T_NATIVE_INT64, mspace, fspace, dxpl, offsets.data()),
                 "H5Dwrite checkpoint offsets");
  }
  h5::write_attr(g, "steps_done", steps_done);
  h5::write_attr(g, "world_size", static_cast<int64_t>(P));
}

std::vector<char> read_checkpoint(hid_t file, const std::string& path, int64_t steps_done, int rank,
                                  int world_size) {
  const std::string slot = slot_path(steps_done);
  const std::string where = "--resume " + path + ": ";
  if (!h5::has_link(file, "/checkpoint") || !h5::has_link(file, slot))
    throw InputError(where + "no checkpoint of the run state (" + slot +
                     " missing: a file written before --resume existed, or by a run killed before "
                     "its first step ended)");
  Handle g(check(H5Gopen2(file, slot.c_str(), H5P_DEFAULT), "H5Gopen"), H5Gclose);
  if (!h5::has_attr(g, "steps_done") || h5::read_attr_int(g, "steps_done") != steps_done)
    throw InputError(where + "the checkpoint in " + slot + " does not belong to step " +
                     std::to_string(steps_done) + " (steps_done)");
  const int64_t ws = h5::has_attr(g, "world_size") ? h5::read_attr_int(g, "world_size") : -1;
  if (ws != world_size)
    throw InputError(where + "written by " + std::to_string(ws) +
                     " processes; resume it with the same number (mpirun -np " +
                     std::to_string(ws) + "), this run has " + std::to_string(world_size));
  std::vector<hsize_t> odims;
  const std::vector<int64_t> offsets = h5::read_int64(g, "offsets", &odims);
  Handle d(check(H5Dopen2(g, "state", H5P_DEFAULT), "H5Dopen checkpoint state"), H5Dclose);
  Handle fspace(check(H5Dget_space(d), "H5Dget_space"), H5Sclose);
  hsize_t total = 0;
  if (H5Sget_simple_extent_ndims(fspace) != 1)
    throw InputError(where + slot + "/state is not one-dimensional");
  H5Sget_simple_extent_dims(fspace, &total, nullptr);
  if (offsets.size() != static_cast<size_t>(world_size) + 1 || offsets[0] != 0 ||
      static_cast<hsize_t>(offsets.back()) != total)
    throw InputError(where + slot + "/offsets does not describe " + slot + "/state");
  for (int r = 0; r < world_size; ++r)
    if (offsets[r + 1] < offsets[r]) throw InputError(where + slot + "/offsets are not ascending");
  const hsize_t start[1] = {static_cast<hsize_t>(offsets[rank])};
  const hsize_t n[1] = {static_cast<hsize_t>(offsets[rank + 1] - offsets[rank])};
  std::vector<char> blob(static_cast<size_t>(n[0]));
  if (n[0] == 0) return blob;
  check_status(H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, nullptr, n, nullptr),
               "H5Sselect_hyperslab");
  Handle mspace(check(H5Screate_simple(1, n, nullptr), "H5Screate_simple"), H5Sclose);
  check_status(H5Dread(d, H5T_NATIVE_UCHAR, mspace, fspace, H5P_DEFAULT, blob.data()),
               "H5Dread checkpoint state");
  return blob;
}

}  // namespace moe
