#pragma once
#include <hdf5.h>

#include <cstdint>
#include <source_location>
#include <string>
#include <vector>

// One checked path for every HDF5 C call: failures throw moe::Error naming the call and object.
namespace moe::h5 {

hid_t check(hid_t id, const char* what, std::source_location where = std::source_location::current());
void check_status(herr_t rc, const char* what, std::source_location where = std::source_location::current());
void silence_error_stack();  // we print our own one-line errors

// Owns one hid_t and closes it with the matching H5*close.
class Handle {
 public:
  using Closer = herr_t (*)(hid_t);
  Handle() = default;
  Handle(hid_t id, Closer closer) : id_(id), closer_(closer) {}
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  Handle(Handle&& o) noexcept : id_(o.id_), closer_(o.closer_) { o.id_ = H5I_INVALID_HID; }
  Handle& operator=(Handle&& o) noexcept {
    reset();
    id_ = o.id_;
    closer_ = o.closer_;
    o.id_ = H5I_INVALID_HID;
    return *this;
  }
  ~Handle() { reset(); }
  void reset() {
    if (id_ >= 0 && closer_) closer_(id_);
    id_ = H5I_INVALID_HID;
  }
  hid_t get() const { return id_; }
  operator hid_t() const { return id_; }

 private:
  hid_t id_ = H5I_INVALID_HID;
  Closer closer_ = nullptr;
};

// Attributes (create or overwrite). Strings are fixed length, at least min_len bytes, so that a
// later value up to that length can overwrite them in place (collectively, in parallel files).
void write_attr(hid_t obj, const std::string& name, const std::string& value, size_t min_len = 0);
void write_attr(hid_t obj, const std::string& name, int64_t value);
bool has_attr(hid_t obj, const std::string& name);
std::string read_attr_string(hid_t obj, const std::string& name);
int64_t read_attr_int(hid_t obj, const std::string& name);

bool has_link(hid_t loc, const std::string& path);
// Dataset as int64 / double (converted by HDF5), with its dims. max_rows >= 0 reads only the first
// max_rows rows of axis 0 (a partial results file may hold an extended but unwritten last row);
// dims then reports the rows read.
std::vector<int64_t> read_int64(hid_t loc, const std::string& path, std::vector<hsize_t>* dims = nullptr, int64_t max_rows = -1);
std::vector<double> read_double(hid_t loc, const std::string& path, std::vector<hsize_t>* dims = nullptr, int64_t max_rows = -1);

}  // namespace moe::h5
