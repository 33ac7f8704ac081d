// NumPy .npy reader for integer arrays (npy_array.hpp).
#include "workloads/import/npy_array.hpp"

#include <cstring>
#include <fstream>
#include <limits>

#include "harness/core/error.hpp"

namespace moe {
namespace {

std::string header_value(const std::string& path, const std::string& header,
                         const std::string& key) {
  const size_t k = header.find("'" + key + "'");
  if (k == std::string::npos) throw InputError(path + ": header field " + key + " is missing");
  size_t v = header.find(':', k);
  if (v == std::string::npos) throw InputError(path + ": header field " + key + ": no value");
  ++v;
  while (v < header.size() && header[v] == ' ') ++v;
  size_t end = header[v] == '(' ? header.find(')', v) : header.find_first_of(",}", v);
  if (end == std::string::npos)
    throw InputError(path + ": header field " + key + ": unterminated value");
  if (header[v] == '(') ++end;
  return header.substr(v, end - v);
}

}  // namespace

NpyArray NpyArray::open(const std::string& path) {
  NpyArray a;
  a.path = path;
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(path + ": cannot open file");
  in.seekg(0, std::ios::end);
  const int64_t size = static_cast<int64_t>(in.tellg());
  in.seekg(0);
  unsigned char pre[12] = {};
  in.read(reinterpret_cast<char*>(pre), 10);
  if (!in || std::memcmp(pre, "\x93NUMPY", 6) != 0)
    throw InputError(path + ": not a NumPy .npy file (bad magic)");
  int64_t hlen = 0, at = 10;
  if (pre[6] == 1) {
    hlen = pre[8] | (pre[9] << 8);
  } else if (pre[6] == 2 || pre[6] == 3) {
    in.read(reinterpret_cast<char*>(pre + 10), 2);
    hlen = pre[8] | (pre[9] << 8) | (pre[10] << 16) | (static_cast<int64_t>(pre[11]) << 24);
    at = 12;
  } else {
    throw InputError(path + ": .npy format version " + std::to_string(pre[6]) +
                     " is not supported");
  }
  if (hlen > size - at)
    throw InputError(path + ": truncated .npy header (" + std::to_string(hlen) +
                     " bytes announced, " + std::to_string(std::max<int64_t>(0, size - at)) +
                     " in the file)");
  std::string header(static_cast<size_t>(hlen), '\0');
  in.seekg(at);
  in.read(header.data(), static_cast<std::streamsize>(hlen));
  if (!in) throw InputError(path + ": truncated .npy header");
  a.data_offset = at + hlen;
  a.descr = header_value(path, header, "descr");
  if (a.descr.size() >= 2 && (a.descr.front() == '\'' || a.descr.front() == '"'))
    a.descr = a.descr.substr(1, a.descr.size() - 2);
  if (a.descr.size() != 3 || (a.descr[0] != '<' && a.descr[0] != '|') ||
      (a.descr[1] != 'i' && a.descr[1] != 'u' && a.descr[1] != 'f') || a.descr[2] < '1' ||
      a.descr[2] > '8')
    throw InputError(path + ": header field descr: dtype '" + a.descr +
                     "' is not supported (little-endian numbers)");
  a.kind = a.descr[1];
  a.elem_bytes = a.descr[2] - '0';
  if (header_value(path, header, "fortran_order") != "False")
    throw InputError(
        path + ": header field fortran_order: True is not supported (save a C-ordered array)");
  std::string s = header_value(path, header, "shape");
  std::string part;
  for (char c : s) {
    if (c == '(' || c == ' ') continue;
    if (c == ',' || c == ')') {
      if (!part.empty()) {
        size_t used = 0;
        int64_t d = -1;
        try {
          d = std::stoll(part, &used);
        } catch (const std::exception&) {
          used = 0;
        }
        if (used != part.size() || d < 0)
          throw InputError(path + ": header field shape: '" + part + "' is not a dimension");
        a.shape.push_back(d);
      }
      part.clear();
      continue;
    }
    part += c;
  }
  a.elements = 1;
  for (int64_t d : a.shape) {
    if (d > 0 && a.elements > std::numeric_limits<int64_t>::max() / 8 / d)
      throw InputError(path + ": header field shape: too large (overflows 64 bits)");
    a.elements *= d;
  }
  if (size - a.data_offset < a.elements * a.elem_bytes)
    throw InputError(path + ": truncated data: " + std::to_string(size - a.data_offset) +
                     " bytes, the shape " + a.shape_text() + " of " + a.descr + " needs " +
                     std::to_string(a.elements * a.elem_bytes));
  return a;
}

std::vector<int64_t> NpyArray::read_integers() const {
  if (kind == 'f' || (kind == 'u' && elem_bytes > 2) || (elem_bytes & (elem_bytes - 1)))
    throw InputError(path + ": header field descr: dtype '" + descr + "' is not an integer type");
  std::ifstream in(path, std::ios::binary);
  in.seekg(data_offset);
  std::vector<unsigned char> raw(static_cast<size_t>(elements * elem_bytes));
  in.read(reinterpret_cast<char*>(raw.data()), static_cast<std::streamsize>(raw.size()));
  if (!in) throw InputError(path + ": read error");
  std::vector<int64_t> out(static_cast<size_t>(elements));
  for (size_t i = 0; i < out.size(); ++i) {
    const unsigned char* p = raw.data() + i * static_cast<size_t>(elem_bytes);
    uint64_t u = 0;
    for (int b = elem_bytes - 1; b >= 0; --b) u = (u << 8) | p[b];
    if (kind == 'i' && elem_bytes < 8 && (u >> (8 * elem_bytes - 1)) & 1u)
      u |= ~uint64_t{0} << (8 * elem_bytes);
    out[i] = static_cast<int64_t>(u);
  }
  return out;
}

std::string NpyArray::shape_text() const {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

}  // namespace moe
