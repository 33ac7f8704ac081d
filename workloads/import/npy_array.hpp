#pragma once
// A NumPy .npy file's header (format versions 1-3: magic, header length, the header dict with
// descr, fortran_order and shape) and its data, for importers of integer arrays. Errors name the
// file and the header field (descr, fortran_order, shape) or say the data is truncated.
#include <cstdint>
#include <string>
#include <vector>

namespace moe {

struct NpyArray {
  std::string path;
  std::string descr;  // e.g. "<i4"
  std::vector<int64_t> shape;
  int64_t elements = 1;
  int elem_bytes = 0;
  char kind = 0;  // 'i' signed integer, 'u' unsigned, 'f' float
  int64_t data_offset = 0;

  // Reads and checks the header; the file must hold the whole array (else "truncated data").
  static NpyArray open(const std::string& path);
  // Every element of an integer array (little-endian i1/i2/i4/i8, u1/u2) as int64, C order.
  std::vector<int64_t> read_integers() const;
  std::string shape_text() const;  // "[3, 2, 4]"
};

}  // namespace moe
