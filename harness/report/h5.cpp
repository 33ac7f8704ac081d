#include "harness/report/h5.hpp"

#include <algorithm>

#include "harness/core/error.hpp"

namespace moe::h5 {

hid_t check(hid_t id, const char* what, std::source_location where) {
  if (id < 0) throw Error(std::string("HDF5 call failed: ") + what, where);
  return id;
}
void check_status(herr_t rc, const char* what, std::source_location where) {
  if (rc < 0) throw Error(std::string("HDF5 call failed: ") + what, where);
}
void silence_error_stack() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

namespace {
Handle string_type(size_t len) {
  Handle t(check(H5Tcopy(H5T_C_S1), "H5Tcopy"), H5Tclose);
  check_status(H5Tset_size(t, std::max<size_t>(len, 1)), "H5Tset_size");
  check_status(H5Tset_strpad(t, H5T_STR_NULLPAD), "H5Tset_strpad");
  return t;
}
}  // namespace

void write_attr(hid_t obj, const std::string& name, const std::string& value, size_t min_len) {
  const size_t len = std::max(value.size(), min_len);
  if (has_attr(obj, name)) {
    Handle a(check(H5Aopen(obj, name.c_str(), H5P_DEFAULT), "H5Aopen"), H5Aclose);
    Handle ft(check(H5Aget_type(a), "H5Aget_type"), H5Tclose);
    if (H5Tget_class(ft) == H5T_STRING && H5Tget_size(ft) >= len && !H5Tis_variable_str(ft)) {
      std::string padded = value;
      padded.resize(H5Tget_size(ft), '\0');
      check_status(H5Awrite(a, ft, padded.data()), ("H5Awrite " + name).c_str());
      return;
    }
    a.reset();
    check_status(H5Adelete(obj, name.c_str()), "H5Adelete");
  }
  Handle t = string_type(len);
  Handle space(check(H5Screate(H5S_SCALAR), "H5Screate"), H5Sclose);
  Handle a(check(H5Acreate2(obj, name.c_str(), t, space, H5P_DEFAULT, H5P_DEFAULT), ("H5Acreate " + name).c_str()), H5Aclose);
  std::string padded = value;
  padded.resize(len, '\0');
  check_status(H5Awrite(a, t, padded.data()), ("H5Awrite " + name).c_str());
}

void write_attr(hid_t obj, const std::string& name, int64_t value) {
  if (!has_attr(obj, name)) {
    Handle space(check(H5Screate(H5S_SCALAR), "H5Screate"), H5Sclose);
    Handle a(check(H5Acreate2(obj, name.c_str(), H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT), ("H5Acreate " + name).c_str()), H5Aclose);
    check_status(H5Awrite(a, H5T_NATIVE_INT64, &value), "H5Awrite");
    return;
  }
  Handle a(check(H5Aopen(obj, name.c_str(), H5P_DEFAULT), "H5Aopen"), H5Aclose);
  check_status(H5Awrite(a, H5T_NATIVE_INT64, &value), ("H5Awrite " + name).c_str());
}

bool has_attr(hid_t obj, const std::string& name) { return H5Aexists(obj, name.c_str()) > 0; }

std::string read_attr_string(hid_t obj, const std::string& name) {
  Handle a(check(H5Aopen(obj, name.c_str(), H5P_DEFAULT), ("H5Aopen " + name).c_str()), H5Aclose);
  Handle ft(check(H5Aget_type(a), "H5Aget_type"), H5Tclose);
  if (H5Tget_class(ft) != H5T_STRING) throw Error("attribute '" + name + "' is not a string");
  if (H5Tis_variable_str(ft)) {
    char* s = nullptr;
    Handle mt(check(H5Tcopy(H5T_C_S1), "H5Tcopy"), H5Tclose);
    check_status(H5Tset_size(mt, H5T_VARIABLE), "H5Tset_size");
    check_status(H5Tset_cset(mt, H5Tget_cset(ft)), "H5Tset_cset");  // h5py writes UTF-8; HDF5 converts no charsets
    check_status(H5Aread(a, mt, &s), "H5Aread");
    std::string out = s ? s : "";
    H5free_memory(s);
    return out;
  }
  std::string buf(H5Tget_size(ft), '\0');
  check_status(H5Aread(a, ft, buf.data()), "H5Aread");
  buf.resize(std::find(buf.begin(), buf.end(), '\0') - buf.begin());
  return buf;
}

int64_t read_attr_int(hid_t obj, const std::string& name) {
  Handle a(check(H5Aopen(obj, name.c_str(), H5P_DEFAULT), ("H5Aopen " + name).c_str()), H5Aclose);
  int64_t v = 0;
  check_status(H5Aread(a, H5T_NATIVE_INT64, &v), ("H5Aread " + name).c_str());
  return v;
}

bool has_link(hid_t loc, const std::string& path) {
  // Check each component so that a missing parent group is "no" rather than an error.
  size_t pos = 0;
  while (true) {
    pos = path.find('/', pos + 1);
    const std::string prefix = path.substr(0, pos);
    if (!prefix.empty() && prefix != "/" && H5Lexists(loc, prefix.c_str(), H5P_DEFAULT) <= 0) return false;
    if (pos == std::string::npos) return true;
  }
}

namespace {
template <class T>
std::vector<T> read_all(hid_t loc, const std::string& path, hid_t mem_type, std::vector<hsize_t>* dims, int64_t max_rows) {
  Handle d(check(H5Dopen2(loc, path.c_str(), H5P_DEFAULT), ("H5Dopen " + path).c_str()), H5Dclose);
  Handle space(check(H5Dget_space(d), "H5Dget_space"), H5Sclose);
  const int rank = H5Sget_simple_extent_ndims(space);
  std::vector<hsize_t> shape(static_cast<size_t>(std::max(rank, 0)));
  H5Sget_simple_extent_dims(space, shape.data(), nullptr);
  if (max_rows >= 0 && !shape.empty() && shape[0] > static_cast<hsize_t>(max_rows)) {
    shape[0] = static_cast<hsize_t>(max_rows);
    const std::vector<hsize_t> start(shape.size(), 0);
    check_status(H5Sselect_hyperslab(space, H5S_SELECT_SET, start.data(), nullptr, shape.data(), nullptr), "H5Sselect_hyperslab");
  }
  hsize_t n = 1;
  for (auto x : shape) n *= x;
  std::vector<T> out(n);
  if (n) {
    Handle mem(check(H5Screate_simple(rank, shape.data(), nullptr), "H5Screate_simple"), H5Sclose);
    check_status(H5Dread(d, mem_type, mem, space, H5P_DEFAULT, out.data()), ("H5Dread " + path).c_str());
  }
  if (dims) *dims = shape;
  return out;
}
}  // namespace

std::vector<int64_t> read_int64(hid_t loc, const std::string& path, std::vector<hsize_t>* dims, int64_t max_rows) {
  return read_all<int64_t>(loc, path, H5T_NATIVE_INT64, dims, max_rows);
}
std::vector<double> read_double(hid_t loc, const std::string& path, std::vector<hsize_t>* dims, int64_t max_rows) {
  return read_all<double>(loc, path, H5T_NATIVE_DOUBLE, dims, max_rows);
}

}  // namespace moe::h5
