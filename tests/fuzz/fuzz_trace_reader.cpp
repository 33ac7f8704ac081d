// libFuzzer target for the trace reader, structure-aware: the input describes a trace (its
// attributes, and datasets whose shapes, types and values need not agree with them) that the target
// writes as a well-formed HDF5 file, then reads through the reader's public API as the trace
// workload does. Mutating the raw bytes of HDF5 files instead tests libhdf5's own parser, which
// crashes on corrupted metadata (a SEGV within 31 executions with libhdf5 1.10.8); truncated and
// non-HDF5 files are cases of the bad-input table (tests/badinput/cases.txt).
#include <fuzzer/FuzzedDataProvider.h>
#include <hdf5.h>

#include <filesystem>
#include <type_traits>
#include <vector>

#include "harness/report/h5.hpp"
#include "tests/fuzz/fuzz_common.hpp"
#include "workloads/trace_file.hpp"

namespace {

using moe::h5::Handle;

void attr_int(hid_t f, const char* name, int64_t v) {
  moe::h5::write_attr(f, name, v);
}

template <class T>
void dataset(hid_t f, const char* path, hid_t type, const std::vector<hsize_t>& dims,
             FuzzedDataProvider& in) {
  size_t n = 1;
  for (auto d : dims) n *= d;
  std::vector<T> values(n);
  for (auto& v : values) {
    if constexpr (std::is_floating_point_v<T>)
      v = in.ConsumeIntegralInRange<int>(0, 9) == 0
              ? in.ConsumeFloatingPoint<T>()
              : static_cast<T>(in.ConsumeIntegralInRange<int>(-3, 20));
    else
      v = static_cast<T>(in.ConsumeIntegralInRange<int>(-3, 20));
  }
  Handle lcpl(H5Pcreate(H5P_LINK_CREATE), H5Pclose);
  H5Pset_create_intermediate_group(lcpl, 1);
  Handle space(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr), H5Sclose);
  Handle d(H5Dcreate2(f, path, type, space, lcpl, H5P_DEFAULT, H5P_DEFAULT), H5Dclose);
  if (d < 0) return;
  hid_t mem = std::is_same_v<T, float>    ? H5T_NATIVE_FLOAT
              : std::is_same_v<T, double> ? H5T_NATIVE_DOUBLE
              : sizeof(T) == 8            ? H5T_NATIVE_INT64
              : sizeof(T) == 4            ? H5T_NATIVE_INT32
                                          : H5T_NATIVE_INT16;
  if (n) H5Dwrite(d, mem, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  const std::string path = fuzz::temp_path(".trace.h5");
  moe::h5::silence_error_stack();
  {
    Handle f(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose);
    if (f < 0) std::abort();
    const bool logits = in.ConsumeBool();
    const uint32_t omit =
        in.ConsumeIntegral<uint32_t>() & in.ConsumeIntegral<uint32_t>();  // mostly 0
    auto small = [&](int lo, int hi) {
      return static_cast<int64_t>(in.ConsumeIntegralInRange<int>(lo, hi));
    };
    const int64_t E = small(-1, 12), L = small(-1, 3), S = small(-1, 4), T = small(-1, 40),
                  K = small(-1, 5);
    if (!(omit & 1))
      moe::h5::write_attr(f, "format",
                          in.ConsumeBool() ? "moebench-trace" : in.ConsumeRandomLengthString(12));
    if (!(omit & 2)) attr_int(f, "format_version", in.ConsumeBool() ? 1 : small(-2, 3));
    if (!(omit & 4))
      moe::h5::write_attr(f, "kind",
                          logits             ? "logits"
                          : in.ConsumeBool() ? "assignments"
                                             : "other");
    if (!(omit & 8)) attr_int(f, "num_experts", E);
    if (!(omit & 16)) attr_int(f, "num_layers", L);
    if (!(omit & 32)) attr_int(f, "num_steps", S);
    if (!(omit & 64)) attr_int(f, "num_tokens", T);
    if (!(omit & 128)) attr_int(f, "top_k", K);
    if (!(omit & 256)) attr_int(f, "variable_k", small(-1, 2));
    if (!(omit & 512)) attr_int(f, "has_sequences", small(-1, 2));
    for (const char* s : {"weights_are", "model", "source", "capture_method", "created_by"})
      moe::h5::write_attr(f, s, "fuzz");
    if (!(omit & 1024)) {  // layer_ids: int64 [n]
      const hsize_t n = static_cast<hsize_t>(small(0, 4));
      std::vector<int64_t> ids(n);
      for (auto& v : ids) v = small(-2, 9);
      Handle space(H5Screate_simple(1, &n, nullptr), H5Sclose);
      Handle a(H5Acreate2(f, "layer_ids", H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT),
               H5Aclose);
      if (n) H5Awrite(a, H5T_NATIVE_INT64, ids.data());
    }
    // Datasets: sizes drawn apart from the attributes (they may lie), types sometimes wrong.
    const hsize_t t =
        static_cast<hsize_t>(in.ConsumeBool() ? std::max<int64_t>(T, 0) : small(0, 40));
    const hsize_t s1 =
        static_cast<hsize_t>(in.ConsumeBool() ? std::max<int64_t>(S + 1, 0) : small(0, 6));
    const hsize_t l =
        static_cast<hsize_t>(in.ConsumeBool() ? std::max<int64_t>(L, 0) : small(0, 4));
    const hsize_t e =
        static_cast<hsize_t>(in.ConsumeBool() ? std::max<int64_t>(E, 0) : small(0, 12));
    const hsize_t k =
        static_cast<hsize_t>(in.ConsumeBool() ? std::max<int64_t>(K, 0) : small(0, 5));
    if (!(omit & 2048)) dataset<int32_t>(f, "/tokens/step", H5T_STD_I32LE, {t}, in);
    if (!(omit & 4096)) dataset<int64_t>(f, "/tokens/sequence", H5T_STD_I64LE, {t}, in);
    if (!(omit & 8192)) dataset<int32_t>(f, "/tokens/position", H5T_STD_I32LE, {t}, in);
    if (in.ConsumeBool()) dataset<int32_t>(f, "/tokens/domain", H5T_STD_I32LE, {t}, in);
    if (!(omit & 16384)) {  // offsets: mostly ascending from 0
      std::vector<int64_t> off(s1);
      int64_t acc = 0;
      for (auto& o : off) {
        o = acc;
        acc += small(-1, 12);
      }
      if (!off.empty() && in.ConsumeBool()) off[0] = small(-2, 3);
      Handle lcpl(H5Pcreate(H5P_LINK_CREATE), H5Pclose);
      H5Pset_create_intermediate_group(lcpl, 1);
      Handle space(H5Screate_simple(1, &s1, nullptr), H5Sclose);
      Handle d(H5Dcreate2(f, "/steps/offset", H5T_STD_I64LE, space, lcpl, H5P_DEFAULT, H5P_DEFAULT),
               H5Dclose);
      if (s1) H5Dwrite(d, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, off.data());
    }
    if (logits) {
      const int type = small(0, 3);
      if (type == 0)
        dataset<float>(f, "/logits", H5T_IEEE_F32LE, {l, t, e}, in);
      else if (type == 1)
        dataset<float>(f, "/logits", H5T_IEEE_F64LE, {l, t, e}, in);
      else if (type == 2)
        dataset<int32_t>(f, "/logits", H5T_STD_I32LE, {l, t, e}, in);
      else
        dataset<double>(f, "/logits", H5T_IEEE_F64BE, {l, t}, in);
    } else {
      if (in.ConsumeBool())
        dataset<int32_t>(f, "/expert_ids", H5T_STD_I32LE, {l, t, k}, in);
      else
        dataset<int16_t>(f, "/expert_ids", H5T_STD_I16LE, {l, t, k}, in);
      dataset<float>(f, "/weights", in.ConsumeBool() ? H5T_IEEE_F32LE : H5T_STD_I32LE,
                     {l, t, in.ConsumeBool() ? k : k + 1}, in);
    }
  }
  fuzz::expect_clean([&] {
    moe::TraceReader r(path);
    const moe::TraceHeader& h = r.header();
    const int64_t n = std::min<int64_t>(h.num_tokens, 4096);
    moe::TraceTokens tokens;
    r.read_tokens(0, n, tokens);
    for (int32_t layer = 0; layer < std::min(h.num_layers, 4); ++layer) {
      if (h.kind == "logits") {
        std::vector<float> lg(static_cast<size_t>(n) * static_cast<size_t>(h.num_experts));
        r.read_logits(layer, 0, n, lg.data());
      } else {
        std::vector<int32_t> ids(static_cast<size_t>(n) * static_cast<size_t>(h.top_k));
        std::vector<float> w(ids.size());
        r.read_assignments(layer, 0, n, ids.data(), w.data());
      }
    }
  });
  std::error_code ec;
  std::filesystem::remove(path, ec);
  return 0;
}
