#pragma once
// Byte streams for checkpointed state (routers, placement planners): a router appends its state
// with StateWriter in save_state() and reads it back, in the same order, with StateReader in
// load_state(). Only trivially copyable values and vectors of them; the reader checks every size
// and throws InputError on a truncated or foreign blob.
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "harness/core/error.hpp"

namespace moe {

class StateWriter {
 public:
  explicit StateWriter(std::vector<char>& out) : out_(out) {}
  template <class T>
  void put(const T& v) {
    static_assert(std::is_trivially_copyable_v<T>);
    append(&v, sizeof(T));
  }
  template <class T>
  void put_vec(const std::vector<T>& v) {
    static_assert(std::is_trivially_copyable_v<T>);
    put(static_cast<uint64_t>(v.size()));
    append(v.data(), v.size() * sizeof(T));
  }
  void put_bools(const std::vector<bool>& v) {
    put(static_cast<uint64_t>(v.size()));
    for (bool b : v) out_.push_back(b ? 1 : 0);
  }
  void put_bytes(const std::vector<char>& v) { put_vec(v); }

 private:
  void append(const void* p, size_t n) {
    if (n == 0) return;
    const size_t at = out_.size();
    out_.resize(at + n);
    std::memcpy(out_.data() + at, p, n);
  }
  std::vector<char>& out_;
};

class StateReader {
 public:
  StateReader(const char* data, size_t size, std::string what)
      : p_(data), end_(data + size), what_(std::move(what)) {}
  template <class T>
  T get() {
    static_assert(std::is_trivially_copyable_v<T>);
    need(sizeof(T));
    T v;
    std::memcpy(&v, p_, sizeof(T));
    p_ += sizeof(T);
    return v;
  }
  template <class T>
  void get_vec(std::vector<T>& v) {
    const uint64_t n = get<uint64_t>();
    if (n > static_cast<uint64_t>(end_ - p_) / (sizeof(T) ? sizeof(T) : 1))
      bad("a vector longer than the blob");
    v.resize(static_cast<size_t>(n));
    if (n > 0)
      std::memcpy(v.data(), p_,
                  static_cast<size_t>(n) * sizeof(T));  // an empty vector's data() may be null
    p_ += n * sizeof(T);
  }
  // A vector whose size the reader already knows (a shape check on load).
  template <class T>
  void get_vec(std::vector<T>& v, size_t expected) {
    get_vec(v);
    if (v.size() != expected)
      bad("a vector of " + std::to_string(v.size()) + " values where " + std::to_string(expected) +
          " were expected");
  }
  void get_bools(std::vector<bool>& v) {
    std::vector<char> c;
    get_vec(c);
    v.assign(c.begin(), c.end());
  }
  void get_bytes(std::vector<char>& v) { get_vec(v); }
  bool done() const { return p_ == end_; }
  void expect_done() const {
    if (!done()) bad(std::to_string(end_ - p_) + " bytes left over");
  }
  [[noreturn]] void bad(const std::string& problem) const {
    throw InputError(what_ + ": checkpointed state does not fit this run (" + problem + ")");
  }

 private:
  void need(size_t n) const {
    if (static_cast<size_t>(end_ - p_) < n) bad("truncated");
  }
  const char* p_;
  const char* end_;
  std::string what_;
};

}  // namespace moe
