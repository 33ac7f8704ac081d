#include "workloads/trace_file.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>

#include "harness/core/build_info.hpp"
#include "harness/core/error.hpp"
#include "harness/report/h5.hpp"

namespace moe {

using h5::check;
using h5::check_status;
using h5::Handle;

// ---------------------------------------------------------------------------------------------
// binary16

uint16_t float_to_half(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t absx = x & 0x7fffffffu;
  if (absx >= 0x7f800000u)
    return static_cast<uint16_t>(sign | 0x7c00u | (absx > 0x7f800000u ? 0x200u : 0u));
  if (absx >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds past 65504: inf
  if (absx < 0x38800000u) {  // subnormal half (or zero): value = m * 2^-24
    if (absx < 0x33000000u)
      return static_cast<uint16_t>(sign);  // below half the smallest subnormal
    const uint32_t mant = (absx & 0x7fffffu) | 0x800000u;
    const int shift = 126 - static_cast<int>(absx >> 23);  // 14 .. 24
    const uint32_t q = mant >> shift;
    const uint32_t half_ulp_bits = mant & ((1u << shift) - 1u);
    const uint32_t halfway = 1u << (shift - 1);
    uint32_t r = q;
    if (half_ulp_bits > halfway || (half_ulp_bits == halfway && (q & 1u))) ++r;
    return static_cast<uint16_t>(sign | r);
  }
  // normal: rebias exponent 127 -> 15, round the 13 dropped mantissa bits to nearest even
  uint32_t h = ((absx - 0x38000000u) >> 13);
  const uint32_t rest = absx & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;
  return static_cast<uint16_t>(sign | h);
}

float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  uint32_t x;
  if (exp == 0) {
    if (mant == 0) {
      x = sign;
    } else {  // subnormal: normalise
      int e = -1;
      uint32_t m = mant;
      do {
        ++e;
        m <<= 1;
      } while ((m & 0x400u) == 0);
      x = sign | (static_cast<uint32_t>(127 - 15 - e) << 23) | ((m & 0x3ffu) << 13);
    }
  } else if (exp == 31) {
    x = sign | 0x7f800000u | (mant << 13);
  } else {
    x = sign | ((exp + 112) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

void reconstruct_logits(const int32_t* ids, const float* weights, int32_t k, int32_t E,
                        bool probabilities, float* out) {
  double sum = 0, w_min = std::numeric_limits<double>::infinity();
  int32_t n = 0;
  for (int32_t j = 0; j < k && ids[j] >= 0; ++j, ++n) {
    sum += std::max(0.f, weights[j]);
    w_min = std::min<double>(w_min, std::max(0.f, weights[j]));
  }
  // Weights that are not probabilities over all experts are scaled to sum to at most 1.
  const double scale = (!probabilities && sum > 1.0) ? 1.0 / sum : 1.0;
  sum *= scale;
  w_min *= scale;
  const double tiny = 1e-30;
  double rest = n < E ? std::max(0.0, 1.0 - sum) / (E - n) : 0.0;
  if (n > 0) rest = std::min(rest, w_min * (1.0 - 1.0 / 1024.0));
  const float z_rest = static_cast<float>(std::log(std::max(rest, tiny)));
  for (int32_t e = 0; e < E; ++e) out[e] = z_rest;
  for (int32_t j = 0; j < n; ++j)
    out[ids[j]] = static_cast<float>(
        std::log(std::max(static_cast<double>(std::max(0.f, weights[j])) * scale, tiny)));
}

std::vector<std::vector<int32_t>> parse_domain_experts(const std::string& spec, int32_t num_experts,
                                                       const std::string& what) {
  std::vector<std::vector<int32_t>> map;
  auto bad = [&](const std::string& why) -> void {
    throw InputError(what + " '" + spec + "': " + why +
                     " (expected DOMAIN=EXPERT[+EXPERT...];..., e.g. 0=0;1=2+3)");
  };
  auto number = [&](const std::string& text, const char* kind) {
    size_t used = 0;
    long long v = -1;
    try {
      v = std::stoll(text, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (text.empty() || used != text.size() || text[0] == '-' || text[0] == '+' || v < 0)
      bad(std::string(kind) + " '" + text + "' is not an integer >= 0");
    return v;
  };
  if (spec.empty()) bad("empty map");
  size_t start = 0;
  while (start <= spec.size()) {
    const size_t semi = spec.find(';', start);
    const std::string entry =
        spec.substr(start, semi == std::string::npos ? std::string::npos : semi - start);
    start = semi == std::string::npos ? spec.size() + 1 : semi + 1;
    if (entry.empty() && semi == std::string::npos && !map.empty()) break;  // a trailing ';'
    const size_t eq = entry.find('=');
    if (eq == std::string::npos) bad("entry '" + entry + "' has no '='");
    const long long d = number(entry.substr(0, eq), "domain");
    if (d >= (1 << 20)) bad("domain " + std::to_string(d) + " is too large (at most 2^20 - 1)");
    if (static_cast<size_t>(d) >= map.size()) map.resize(static_cast<size_t>(d) + 1);
    auto& experts = map[static_cast<size_t>(d)];
    if (!experts.empty()) bad("domain " + std::to_string(d) + " appears twice");
    const std::string list = entry.substr(eq + 1);
    size_t p = 0;
    while (p <= list.size()) {
      const size_t plus = list.find('+', p);
      const std::string item =
          list.substr(p, plus == std::string::npos ? std::string::npos : plus - p);
      const long long e = number(item, "expert");
      if (e >= num_experts)
        bad("expert " + std::to_string(e) + " of domain " + std::to_string(d) + " outside [0, " +
            std::to_string(num_experts) + ")");
      if (std::find(experts.begin(), experts.end(), static_cast<int32_t>(e)) != experts.end())
        bad("expert " + std::to_string(e) + " twice in domain " + std::to_string(d));
      experts.push_back(static_cast<int32_t>(e));
      if (plus == std::string::npos) break;
      p = plus + 1;
    }
  }
  return map;
}

std::string format_domain_experts(const std::vector<std::vector<int32_t>>& map) {
  std::string s;
  for (size_t d = 0; d < map.size(); ++d) {
    if (map[d].empty()) continue;
    s += (s.empty() ? "" : ";") + std::to_string(d) + "=";
    for (size_t i = 0; i < map[d].size(); ++i) s += (i ? "+" : "") + std::to_string(map[d][i]);
  }
  return s;
}

std::string check_counts(const int64_t* c, int32_t first_step, int32_t steps, int32_t L, int32_t E,
                         const std::vector<int64_t>& layer_ids) {
  for (int32_t s = 0; s < steps; ++s) {
    int64_t first_sum = 0;
    for (int32_t l = 0; l < L; ++l) {
      const int64_t* row = c + (static_cast<int64_t>(s) * L + l) * E;
      int64_t sum = 0;
      for (int32_t e = 0; e < E; ++e) {
        if (row[e] < 0)
          return "step " + std::to_string(first_step + s) + " layer " +
                 std::to_string(layer_ids[static_cast<size_t>(l)]) + " expert " +
                 std::to_string(e) + ": count " + std::to_string(row[e]) + " is negative";
        sum += row[e];
      }
      if (l == 0)
        first_sum = sum;
      else if (sum != first_sum)
        return "step " + std::to_string(first_step + s) + ": layer " +
               std::to_string(layer_ids[static_cast<size_t>(l)]) + " counts " +
               std::to_string(sum) + " assignments, layer " + std::to_string(layer_ids[0]) +
               " counts " + std::to_string(first_sum) +
               " (every layer of a step must route the same tokens)";
    }
  }
  return "";
}

namespace {

Handle half_type() {
  Handle t(check(H5Tcopy(H5T_IEEE_F32LE), "H5Tcopy"), H5Tclose);
  check_status(H5Tset_fields(t, 15, 10, 5, 0, 10), "H5Tset_fields");
  check_status(H5Tset_precision(t, 16), "H5Tset_precision");
  check_status(H5Tset_size(t, 2), "H5Tset_size");
  check_status(H5Tset_ebias(t, 15), "H5Tset_ebias");
  check_status(H5Tset_offset(t, 0), "H5Tset_offset");
  return t;
}

void write_attr_ints(hid_t obj, const std::string& name, const std::vector<int64_t>& v) {
  const hsize_t n = v.size();
  Handle space(check(H5Screate_simple(1, &n, nullptr), "H5Screate_simple"), H5Sclose);
  Handle a(check(H5Acreate2(obj, name.c_str(), H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT),
                 "H5Acreate"),
           H5Aclose);
  if (n > 0) check_status(H5Awrite(a, H5T_NATIVE_INT64, v.data()), "H5Awrite");
}

std::vector<int64_t> read_attr_ints(hid_t obj, const std::string& name) {
  Handle a(check(H5Aopen(obj, name.c_str(), H5P_DEFAULT), "H5Aopen"), H5Aclose);
  Handle space(check(H5Aget_space(a), "H5Aget_space"), H5Sclose);
  const hssize_t n = H5Sget_simple_extent_npoints(space);
  std::vector<int64_t> v(static_cast<size_t>(std::max<hssize_t>(n, 0)));
  if (!v.empty()) check_status(H5Aread(a, H5T_NATIVE_INT64, v.data()), "H5Aread");
  return v;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Reader

struct TraceReader::Impl {
  std::string path;
  TraceHeader h;
  Handle file, dxpl;
  Handle d_step, d_seq, d_pos, d_tok, d_dom, d_rank, d_logits, d_ids, d_w, d_counts;
  Handle logits_file_type;
  std::vector<uint16_t> half_buf;

  [[noreturn]] void bad(const std::string& what) const {
    throw InputError("trace " + path + ": " + what);
  }

  Handle open_dataset(const std::string& name, bool required) {
    if (!h5::has_link(file, name)) {
      if (required)
        bad("missing dataset " + name + " (not a moebench trace? see workloads/TRACE_FORMAT.md)");
      return {};
    }
    Handle d(check(H5Dopen2(file, name.c_str(), H5P_DEFAULT), ("H5Dopen " + name).c_str()),
             H5Dclose);
    return d;
  }

  std::vector<hsize_t> dims(hid_t d) const {
    Handle s(check(H5Dget_space(d), "H5Dget_space"), H5Sclose);
    const int rank = H5Sget_simple_extent_ndims(s);
    std::vector<hsize_t> out(static_cast<size_t>(std::max(rank, 0)));
    H5Sget_simple_extent_dims(s, out.data(), nullptr);
    return out;
  }

  // Reads a hyperslab [start, start + count) of dataset d into buf as mem_type.
  void read(hid_t d, hid_t mem_type, const std::vector<hsize_t>& start,
            const std::vector<hsize_t>& count, void* buf, const char* what) {
    Handle fs(check(H5Dget_space(d), "H5Dget_space"), H5Sclose);
    check_status(
        H5Sselect_hyperslab(fs, H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr),
        "H5Sselect_hyperslab");
    Handle ms(check(H5Screate_simple(static_cast<int>(count.size()), count.data(), nullptr),
                    "H5Screate_simple"),
              H5Sclose);
    hsize_t total = 1;
    for (auto c : count) total *= c;
    if (total == 0) {
      H5Sselect_none(fs);
      H5Sselect_none(ms);
    }
    static char dummy[16];
    check_status(H5Dread(d, mem_type, ms, fs, dxpl, total ? buf : dummy), what);
  }
};

TraceReader::TraceReader(const std::string& path, MPI_Comm comm, bool collective)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.path = path;
  h5::silence_error_stack();
  if (!std::filesystem::exists(path)) m.bad("no such file");
  if (H5Fis_hdf5(path.c_str()) <= 0) m.bad("not an HDF5 file");
  Handle fapl(check(H5Pcreate(H5P_FILE_ACCESS), "H5Pcreate"), H5Pclose);
  if (collective) check_status(H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL), "H5Pset_fapl_mpio");
  const hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl);
  if (f < 0) m.bad("cannot open (unreadable HDF5 file)");
  m.file = Handle(f, H5Fclose);
  m.dxpl = Handle(check(H5Pcreate(H5P_DATASET_XFER), "H5Pcreate"), H5Pclose);
  // Independent transfers: each process reads its own hyperslabs as often as it needs (ragged
  // rank layouts give processes different row counts); opening the file is collective.
  if (collective) check_status(H5Pset_dxpl_mpio(m.dxpl, H5FD_MPIO_INDEPENDENT), "H5Pset_dxpl_mpio");

  TraceHeader& h = m.h;
  auto attr_s = [&](const char* name, bool required) -> std::string {
    if (!h5::has_attr(m.file, name)) {
      if (required) m.bad(std::string("missing attribute ") + name);
      return "";
    }
    return h5::read_attr_string(m.file, name);
  };
  auto attr_i = [&](const char* name) -> int64_t {
    if (!h5::has_attr(m.file, name)) m.bad(std::string("missing attribute ") + name);
    return h5::read_attr_int(m.file, name);
  };
  if (!h5::has_attr(m.file, "format") || attr_s("format", true) != kTraceFormatName)
    m.bad("attribute format is not '" + std::string(kTraceFormatName) +
          "' (not a moebench trace; convert it with `moebench trace convert`)");
  const int64_t version = attr_i("format_version");
  if (version != kTraceFormatVersion)
    m.bad("format_version " + std::to_string(version) +
          " is not supported (this build reads version " + std::to_string(kTraceFormatVersion) +
          ")");
  h.kind = attr_s("kind", true);
  if (h.kind != "logits" && h.kind != "assignments" && h.kind != "counts")
    m.bad("attribute kind = '" + h.kind + "' (known: logits, assignments, counts)");
  h.num_experts = static_cast<int32_t>(attr_i("num_experts"));
  h.num_layers = static_cast<int32_t>(attr_i("num_layers"));
  h.num_steps = static_cast<int32_t>(attr_i("num_steps"));
  h.num_tokens = attr_i("num_tokens");
  h.top_k = static_cast<int32_t>(attr_i("top_k"));
  h.variable_k = h5::has_attr(m.file, "variable_k") && h5::read_attr_int(m.file, "variable_k") != 0;
  h.has_sequences = attr_i("has_sequences") != 0;
  h.weights_are = h5::has_attr(m.file, "weights_are") ? attr_s("weights_are", false) : "unknown";
  h.model = attr_s("model", false);
  h.source = attr_s("source", false);
  h.capture_method = attr_s("capture_method", false);
  h.created_by = attr_s("created_by", false);
  h.domain_experts = attr_s("domain_experts", false);
  if (h.num_experts < 1)
    m.bad("attribute num_experts = " + std::to_string(h.num_experts) + " (must be >= 1)");
  if (h.num_layers < 1)
    m.bad("attribute num_layers = " + std::to_string(h.num_layers) + " (must be >= 1)");
  if (h.num_steps < 1)
    m.bad("attribute num_steps = " + std::to_string(h.num_steps) + " (must be >= 1)");
  if (h.num_tokens < 1)
    m.bad("attribute num_tokens = " + std::to_string(h.num_tokens) + " (must be >= 1)");
  h.layer_ids = h5::has_attr(m.file, "layer_ids") ? read_attr_ints(m.file, "layer_ids")
                                                  : std::vector<int64_t>{};
  if (h.layer_ids.empty())
    for (int32_t l = 0; l < h.num_layers; ++l) h.layer_ids.push_back(l);
  if (static_cast<int32_t>(h.layer_ids.size()) != h.num_layers)
    m.bad("attribute layer_ids has " + std::to_string(h.layer_ids.size()) +
          " entries for num_layers = " + std::to_string(h.num_layers));

  if (h.counts()) {
    m.d_counts = m.open_dataset("/counts", true);
    const auto dd = m.dims(m.d_counts);
    if (dd.size() != 3 || dd[0] != static_cast<hsize_t>(h.num_steps) ||
        dd[1] != static_cast<hsize_t>(h.num_layers) || dd[2] != static_cast<hsize_t>(h.num_experts))
      m.bad("/counts must be [num_steps, num_layers, num_experts] = [" +
            std::to_string(h.num_steps) + ", " + std::to_string(h.num_layers) + ", " +
            std::to_string(h.num_experts) + "]");
    Handle t(check(H5Dget_type(m.d_counts), "H5Dget_type"), H5Tclose);
    if (H5Tget_class(t) != H5T_INTEGER) m.bad("/counts is not an integer dataset");
    // Each step's assignments (the same in every layer) give the step offsets; checked here once.
    const int64_t per_step = static_cast<int64_t>(h.num_layers) * h.num_experts;
    const int32_t block = static_cast<int32_t>(std::max<int64_t>(1, (int64_t{1} << 20) / per_step));
    h.step_offsets.assign(static_cast<size_t>(h.num_steps) + 1, 0);
    std::vector<int64_t> c;
    for (int32_t s0 = 0; s0 < h.num_steps; s0 += block) {
      const int32_t n = std::min(block, h.num_steps - s0);
      read_counts(s0, n, c);
      const std::string problem =
          check_counts(c.data(), s0, n, h.num_layers, h.num_experts, h.layer_ids);
      if (!problem.empty()) m.bad("/counts " + problem);
      for (int32_t i = 0; i < n; ++i) {
        int64_t sum = 0;
        for (int32_t e = 0; e < h.num_experts; ++e) sum += c[static_cast<size_t>(i * per_step + e)];
        h.step_offsets[static_cast<size_t>(s0 + i) + 1] =
            h.step_offsets[static_cast<size_t>(s0 + i)] + sum;
      }
    }
    if (h.step_offsets.back() != h.num_tokens)
      m.bad("attribute num_tokens = " + std::to_string(h.num_tokens) + " but /counts holds " +
            std::to_string(h.step_offsets.back()) + " assignments per layer");
    h.has_sequences = false;
    return;
  }
  m.d_step = m.open_dataset("/tokens/step", true);
  m.d_seq = m.open_dataset("/tokens/sequence", true);
  m.d_pos = m.open_dataset("/tokens/position", true);
  m.d_tok = m.open_dataset("/tokens/token_id", false);
  m.d_dom = m.open_dataset("/tokens/domain", false);
  m.d_rank = m.open_dataset("/tokens/rank", false);
  h.has_token_id = m.d_tok.get() >= 0;
  h.has_domain = m.d_dom.get() >= 0;
  h.has_rank = m.d_rank.get() >= 0;
  for (hid_t d : {m.d_step.get(), m.d_seq.get(), m.d_pos.get()}) {
    const auto dd = m.dims(d);
    if (dd.size() != 1 || static_cast<int64_t>(dd[0]) != h.num_tokens)
      m.bad("a /tokens dataset does not have num_tokens = " + std::to_string(h.num_tokens) +
            " rows");
  }
  {
    Handle d = m.open_dataset("/steps/offset", true);
    const auto dd = m.dims(d);
    if (dd.size() != 1 || static_cast<int64_t>(dd[0]) != h.num_steps + 1)
      m.bad("/steps/offset must have num_steps + 1 = " + std::to_string(h.num_steps + 1) +
            " entries");
    h.step_offsets.resize(dd[0]);
    m.read(d, H5T_NATIVE_INT64, {0}, {dd[0]}, h.step_offsets.data(), "H5Dread /steps/offset");
    if (h.step_offsets.front() != 0 || h.step_offsets.back() != h.num_tokens ||
        !std::is_sorted(h.step_offsets.begin(), h.step_offsets.end()))
      m.bad("/steps/offset must rise from 0 to num_tokens = " + std::to_string(h.num_tokens));
  }
  if (h.logits()) {
    m.d_logits = m.open_dataset("/logits", true);
    const auto dd = m.dims(m.d_logits);
    if (dd.size() != 3 || dd[0] != static_cast<hsize_t>(h.num_layers) ||
        static_cast<int64_t>(dd[1]) != h.num_tokens || dd[2] != static_cast<hsize_t>(h.num_experts))
      m.bad("/logits must be [num_layers, num_tokens, num_experts] = [" +
            std::to_string(h.num_layers) + ", " + std::to_string(h.num_tokens) + ", " +
            std::to_string(h.num_experts) + "]");
    m.logits_file_type = Handle(check(H5Dget_type(m.d_logits), "H5Dget_type"), H5Tclose);
    if (H5Tget_class(m.logits_file_type) != H5T_FLOAT)
      m.bad("/logits is not a floating-point dataset");
    h.logits_fp16 = H5Tget_size(m.logits_file_type) == 2;
    if (h.logits_fp16) {
      // Read the raw half floats (the file's own little-endian type) and widen them here.
      Handle ht = half_type();
      if (H5Tequal(ht, m.logits_file_type) <= 0)
        m.bad("/logits: 16-bit floats must be IEEE binary16 little-endian");
    }
  } else {
    m.d_ids = m.open_dataset("/expert_ids", true);
    m.d_w = m.open_dataset("/weights", true);
    const auto di = m.dims(m.d_ids), dw = m.dims(m.d_w);
    if (di.size() != 3 || di[0] != static_cast<hsize_t>(h.num_layers) ||
        static_cast<int64_t>(di[1]) != h.num_tokens || di[2] != static_cast<hsize_t>(h.top_k) ||
        di != dw)
      m.bad("/expert_ids and /weights must both be [num_layers, num_tokens, top_k] = [" +
            std::to_string(h.num_layers) + ", " + std::to_string(h.num_tokens) + ", " +
            std::to_string(h.top_k) + "]");
    if (h.top_k < 1 || h.top_k > h.num_experts)
      m.bad("attribute top_k = " + std::to_string(h.top_k) + " (must be in [1, num_experts])");
  }
}

TraceReader::~TraceReader() = default;
const TraceHeader& TraceReader::header() const {
  return impl_->h;
}
const std::string& TraceReader::path() const {
  return impl_->path;
}

void TraceReader::read_sequences(int64_t first, int64_t n, std::vector<int64_t>& out) {
  out.resize(static_cast<size_t>(n));
  impl_->read(impl_->d_seq, H5T_NATIVE_INT64, {static_cast<hsize_t>(first)},
              {static_cast<hsize_t>(n)}, out.data(), "H5Dread /tokens/sequence");
}

void TraceReader::read_counts(int32_t first_step, int32_t n, std::vector<int64_t>& out) {
  Impl& m = *impl_;
  if (!m.h.counts()) fail("trace read_counts: not a count-only trace");
  if (first_step < 0 || n < 0 || first_step + n > m.h.num_steps)
    fail("trace read_counts: steps outside the trace");
  out.resize(static_cast<size_t>(n) * m.h.num_layers * m.h.num_experts);
  m.read(m.d_counts, H5T_NATIVE_INT64, {static_cast<hsize_t>(first_step), 0, 0},
         {static_cast<hsize_t>(n), static_cast<hsize_t>(m.h.num_layers),
          static_cast<hsize_t>(m.h.num_experts)},
         out.data(), "H5Dread /counts");
}

void TraceReader::read_domains(int64_t first, int64_t n, std::vector<int32_t>& out) {
  Impl& m = *impl_;
  if (m.d_dom.get() < 0) m.bad("no /tokens/domain (the trace has no domain labels)");
  if (first < 0 || n < 0 || first + n > m.h.num_tokens)
    fail("trace read_domains: rows outside the trace");
  out.resize(static_cast<size_t>(n));
  m.read(m.d_dom, H5T_NATIVE_INT32, {static_cast<hsize_t>(first)}, {static_cast<hsize_t>(n)},
         out.data(), "H5Dread /tokens/domain");
}

void TraceReader::read_tokens(int64_t first, int64_t n, TraceTokens& out, bool with_optional) {
  Impl& m = *impl_;
  if (first < 0 || n < 0 || first + n > m.h.num_tokens)
    fail("trace read_tokens: rows outside the trace");
  const std::vector<hsize_t> start{static_cast<hsize_t>(first)}, count{static_cast<hsize_t>(n)};
  out.step.resize(static_cast<size_t>(n));
  out.sequence.resize(static_cast<size_t>(n));
  out.position.resize(static_cast<size_t>(n));
  m.read(m.d_step, H5T_NATIVE_INT32, start, count, out.step.data(), "H5Dread /tokens/step");
  m.read(m.d_seq, H5T_NATIVE_INT64, start, count, out.sequence.data(), "H5Dread /tokens/sequence");
  m.read(m.d_pos, H5T_NATIVE_INT32, start, count, out.position.data(), "H5Dread /tokens/position");
  auto opt32 = [&](const Handle& d, std::vector<int32_t>& v, const char* what) {
    if (!with_optional || d.get() < 0) return v.clear();
    v.resize(static_cast<size_t>(n));
    m.read(d, H5T_NATIVE_INT32, start, count, v.data(), what);
  };
  if (with_optional && m.d_tok.get() >= 0) {
    out.token_id.resize(static_cast<size_t>(n));
    m.read(m.d_tok, H5T_NATIVE_INT64, start, count, out.token_id.data(),
           "H5Dread /tokens/token_id");
  } else {
    out.token_id.clear();
  }
  opt32(m.d_dom, out.domain, "H5Dread /tokens/domain");
  opt32(m.d_rank, out.rank, "H5Dread /tokens/rank");
}

void TraceReader::read_logits(int32_t layer, int64_t first, int64_t n, float* out) {
  Impl& m = *impl_;
  if (!m.h.logits()) fail("trace read_logits: an assignment trace has no logits");
  const int64_t E = m.h.num_experts;
  const std::vector<hsize_t> start{static_cast<hsize_t>(layer), static_cast<hsize_t>(first), 0},
      count{1, static_cast<hsize_t>(n), static_cast<hsize_t>(E)};
  auto check_finite = [&](const float* z, int64_t rows, int64_t row0) {
    for (int64_t i = 0; i < rows * E; ++i)
      if (std::isnan(z[i]) || z[i] == std::numeric_limits<float>::infinity())
        m.bad("/logits layer " + std::to_string(layer) + " row " + std::to_string(row0 + i / E) +
              " expert " + std::to_string(i % E) + ": " + (std::isnan(z[i]) ? "NaN" : "+inf") +
              " (-inf is allowed: expert never chosen)");
  };
  if (!m.h.logits_fp16) {
    m.read(m.d_logits, H5T_NATIVE_FLOAT, start, count, out, "H5Dread /logits");
    check_finite(out, n, first);
    return;
  }
  // Blocks of rows through a small buffer: memory stays at the float32 output.
  constexpr int64_t kRows = 4096;
  for (int64_t r = 0; r < n; r += kRows) {
    const int64_t rows = std::min(kRows, n - r);
    m.half_buf.resize(static_cast<size_t>(rows * E));
    const std::vector<hsize_t> st{static_cast<hsize_t>(layer), static_cast<hsize_t>(first + r), 0},
        ct{1, static_cast<hsize_t>(rows), static_cast<hsize_t>(E)};
    m.read(m.d_logits, m.logits_file_type, st, ct, m.half_buf.data(), "H5Dread /logits");
    float* o = out + r * E;
    for (size_t i = 0; i < m.half_buf.size(); ++i) o[i] = half_to_float(m.half_buf[i]);
    check_finite(o, rows, first + r);
  }
}

void TraceReader::read_assignments(int32_t layer, int64_t first, int64_t n, int32_t* ids,
                                   float* weights) {
  Impl& m = *impl_;
  if (m.h.logits()) fail("trace read_assignments: a logit trace has no recorded assignments");
  const std::vector<hsize_t> start{static_cast<hsize_t>(layer), static_cast<hsize_t>(first), 0},
      count{1, static_cast<hsize_t>(n), static_cast<hsize_t>(m.h.top_k)};
  m.read(m.d_ids, H5T_NATIVE_INT32, start, count, ids, "H5Dread /expert_ids");
  m.read(m.d_w, H5T_NATIVE_FLOAT, start, count, weights, "H5Dread /weights");
  // Ids in [0, E), -1 only as padding at the end of a row, no expert twice; finite weights.
  const int32_t k = m.h.top_k, E = m.h.num_experts;
  for (int64_t t = 0; t < n; ++t) {
    const int32_t* row = ids + t * k;
    bool padding = false;
    for (int32_t j = 0; j < k; ++j) {
      const int32_t e = row[j];
      const auto where = [&] {
        return "/expert_ids layer " + std::to_string(layer) + " row " + std::to_string(first + t) +
               ": ";
      };
      if (e == -1) {
        padding = true;
        continue;
      }
      if (e < 0 || e >= E)
        m.bad(where() + "expert id " + std::to_string(e) + " outside [0, " + std::to_string(E) +
              ")");
      if (padding) m.bad(where() + "expert id " + std::to_string(e) + " after -1 padding");
      for (int32_t i = 0; i < j; ++i)
        if (row[i] == e) m.bad(where() + "expert " + std::to_string(e) + " twice");
      if (!std::isfinite(weights[t * k + j]))
        m.bad("/weights layer " + std::to_string(layer) + " row " + std::to_string(first + t) +
              ": not finite");
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Writer

struct TraceWriter::Impl {
  std::string path, tmp;
  TraceWriterOptions o;
  Handle file;
  Handle d_step, d_seq, d_pos, d_tok, d_dom, d_rank, d_logits, d_ids, d_w;
  Handle half;
  int64_t tokens = 0;
  int32_t last_step = -1;
  std::vector<int64_t> step_offsets{0};
  bool finished = false;
  std::vector<uint16_t> half_buf;
  std::vector<std::vector<int32_t>> domain_map;  // parsed o.domain_experts

  Handle create(const std::string& name, hid_t type, const std::vector<hsize_t>& dims, int axis,
                hsize_t chunk_rows) {
    std::vector<hsize_t> maxdims = dims, chunk = dims;
    maxdims[axis] = H5S_UNLIMITED;
    chunk[axis] = chunk_rows;
    for (size_t i = 0; i < chunk.size(); ++i)
      if (static_cast<int>(i) < axis) chunk[i] = 1;
    Handle space(check(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), maxdims.data()),
                       "H5Screate_simple"),
                 H5Sclose);
    Handle dcpl(check(H5Pcreate(H5P_DATASET_CREATE), "H5Pcreate"), H5Pclose);
    check_status(H5Pset_chunk(dcpl, static_cast<int>(chunk.size()), chunk.data()), "H5Pset_chunk");
    if (o.deflate_level > 0) {
      check_status(H5Pset_shuffle(dcpl), "H5Pset_shuffle");
      check_status(H5Pset_deflate(dcpl, static_cast<unsigned>(o.deflate_level)), "H5Pset_deflate");
    }
    Handle lcpl(check(H5Pcreate(H5P_LINK_CREATE), "H5Pcreate"), H5Pclose);
    check_status(H5Pset_create_intermediate_group(lcpl, 1), "H5Pset_create_intermediate_group");
    Handle dapl(check(H5Pcreate(H5P_DATASET_ACCESS), "H5Pcreate"), H5Pclose);
    check_status(H5Pset_chunk_cache(dapl, 12421, 64u << 20, 1.0),
                 "H5Pset_chunk_cache");  // partial chunks stay cached
    return Handle(check(H5Dcreate2(file, name.c_str(), type, space, lcpl, dcpl, dapl),
                        ("H5Dcreate " + name).c_str()),
                  H5Dclose);
  }

  void extend(hid_t d, int axis, hsize_t rows) {
    Handle s(check(H5Dget_space(d), "H5Dget_space"), H5Sclose);
    std::vector<hsize_t> dims(static_cast<size_t>(H5Sget_simple_extent_ndims(s)));
    H5Sget_simple_extent_dims(s, dims.data(), nullptr);
    dims[axis] = rows;
    check_status(H5Dset_extent(d, dims.data()), "H5Dset_extent");
  }

  void write(hid_t d, hid_t mem_type, const std::vector<hsize_t>& start,
             const std::vector<hsize_t>& count, const void* buf, const char* what) {
    Handle fs(check(H5Dget_space(d), "H5Dget_space"), H5Sclose);
    check_status(
        H5Sselect_hyperslab(fs, H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr),
        "H5Sselect_hyperslab");
    Handle ms(check(H5Screate_simple(static_cast<int>(count.size()), count.data(), nullptr),
                    "H5Screate_simple"),
              H5Sclose);
    check_status(H5Dwrite(d, mem_type, ms, fs, H5P_DEFAULT, buf), what);
  }
};

TraceWriter::TraceWriter(const std::string& path, const TraceWriterOptions& options)
    : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.path = path;
  m.tmp = path + ".tmp";
  m.o = options;
  TraceWriterOptions& o = m.o;
  h5::silence_error_stack();
  if (o.kind != "logits" && o.kind != "assignments")
    throw InputError("trace writer: kind '" + o.kind + "' (known: logits, assignments)");
  if (o.num_experts < 1 || o.num_layers < 1)
    throw InputError("trace writer: needs >= 1 expert and >= 1 layer");
  if (o.kind == "assignments" && (o.top_k < 1 || o.top_k > o.num_experts))
    throw InputError("trace writer: top_k " + std::to_string(o.top_k) + " outside [1, " +
                     std::to_string(o.num_experts) + "]");
  if (o.layer_ids.empty())
    for (int32_t l = 0; l < o.num_layers; ++l) o.layer_ids.push_back(l);
  if (static_cast<int32_t>(o.layer_ids.size()) != o.num_layers)
    throw InputError("trace writer: layer_ids and num_layers differ");
  if (!o.domain_experts.empty()) {
    if (!o.has_domain)
      throw InputError("--domain-experts " + o.domain_experts +
                       ": the input has no domain labels (csv/jsonl: --field domain=KEY; npy: "
                       "--token-table with a domain column)");
    m.domain_map = parse_domain_experts(o.domain_experts, o.num_experts, "--domain-experts");
    o.domain_experts = format_domain_experts(m.domain_map);
  }
  if (std::filesystem::exists(path) && !o.force)
    throw InputError(path + ": exists (pass --force to replace it)");
  const hid_t f = H5Fcreate(m.tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  if (f < 0) throw InputError(m.tmp + ": cannot create file");
  m.file = Handle(f, H5Fclose);
  try {
    create_datasets();
  } catch (...) {
    m.file.reset();
    std::error_code ec;
    std::filesystem::remove(m.tmp, ec);
    throw;
  }
}

void TraceWriter::create_datasets() {
  Impl& m = *impl_;
  const TraceWriterOptions& o = m.o;
  constexpr hsize_t kMetaChunk = 1 << 16;
  m.d_step = m.create("/tokens/step", H5T_STD_I32LE, {0}, 0, kMetaChunk);
  m.d_seq = m.create("/tokens/sequence", H5T_STD_I64LE, {0}, 0, kMetaChunk);
  m.d_pos = m.create("/tokens/position", H5T_STD_I32LE, {0}, 0, kMetaChunk);
  if (o.has_token_id) m.d_tok = m.create("/tokens/token_id", H5T_STD_I64LE, {0}, 0, kMetaChunk);
  if (o.has_domain) m.d_dom = m.create("/tokens/domain", H5T_STD_I32LE, {0}, 0, kMetaChunk);
  if (o.has_rank) m.d_rank = m.create("/tokens/rank", H5T_STD_I32LE, {0}, 0, kMetaChunk);
  const hsize_t L = static_cast<hsize_t>(o.num_layers);
  if (o.kind == "logits") {
    m.half = half_type();
    const hsize_t E = static_cast<hsize_t>(o.num_experts);
    const hsize_t elem = o.fp16 ? 2 : 4;
    const hsize_t rows = std::clamp<hsize_t>((1u << 20) / (E * elem), 1, kMetaChunk);
    m.d_logits = m.create("/logits", o.fp16 ? m.half.get() : H5T_IEEE_F32LE, {L, 0, E}, 1, rows);
  } else {
    const hsize_t k = static_cast<hsize_t>(o.top_k);
    const hsize_t rows = std::clamp<hsize_t>((1u << 20) / (k * 4), 1, kMetaChunk);
    m.d_ids = m.create("/expert_ids", o.num_experts <= 32767 ? H5T_STD_I16LE : H5T_STD_I32LE,
                       {L, 0, k}, 1, rows);
    m.d_w = m.create("/weights", H5T_IEEE_F32LE, {L, 0, k}, 1, rows);
  }
}

TraceWriter::~TraceWriter() {
  if (impl_ && !impl_->finished) {
    impl_->file.reset();
    std::error_code ec;
    std::filesystem::remove(impl_->tmp, ec);
  }
}

int64_t TraceWriter::tokens() const {
  return impl_->tokens;
}

int64_t TraceWriter::append_tokens(int32_t step, int64_t n, std::span<const int64_t> sequence,
                                   std::span<const int32_t> position,
                                   std::span<const int64_t> token_id,
                                   std::span<const int32_t> domain, std::span<const int32_t> rank) {
  Impl& m = *impl_;
  const TraceWriterOptions& o = m.o;
  if (step != m.last_step && step != m.last_step + 1)
    throw InputError("trace writer: step " + std::to_string(step) + " after step " +
                     std::to_string(m.last_step) + " (steps must come in order)");
  auto need = [&](size_t got, bool wanted, const char* what) {
    if (wanted && got != static_cast<size_t>(n))
      fail(std::string("trace writer: ") + what + " has the wrong length");
  };
  need(position.size(), true, "position");
  need(sequence.size(), o.has_sequences, "sequence");
  need(token_id.size(), o.has_token_id, "token_id");
  need(domain.size(), o.has_domain, "domain");
  need(rank.size(), o.has_rank, "rank");
  for (size_t i = 0; i < domain.size(); ++i) {
    const int32_t d = domain[i];
    if (d < 0)
      fail("trace writer: negative domain label");  // importers refuse them, naming the line
    if (!m.domain_map.empty() &&
        (static_cast<size_t>(d) >= m.domain_map.size() || m.domain_map[d].empty()))
      throw InputError("--domain-experts " + o.domain_experts + ": token " +
                       std::to_string(m.tokens + static_cast<int64_t>(i)) + " (step " +
                       std::to_string(step) + ") has domain " + std::to_string(d) +
                       ", which the map does not list");
  }
  if (step == m.last_step + 1) {
    if (m.last_step >= 0) m.step_offsets.push_back(m.tokens);
    m.last_step = step;
  }
  if (n == 0) return m.tokens;
  const int64_t first = m.tokens;
  const hsize_t total = static_cast<hsize_t>(first + n);
  const std::vector<hsize_t> start{static_cast<hsize_t>(first)}, count{static_cast<hsize_t>(n)};
  std::vector<int32_t> steps(static_cast<size_t>(n), step);
  for (hid_t d :
       {m.d_step.get(), m.d_seq.get(), m.d_pos.get(), m.d_tok.get(), m.d_dom.get(), m.d_rank.get()})
    if (d >= 0) m.extend(d, 0, total);
  m.write(m.d_step, H5T_NATIVE_INT32, start, count, steps.data(), "H5Dwrite /tokens/step");
  if (o.has_sequences) {
    m.write(m.d_seq, H5T_NATIVE_INT64, start, count, sequence.data(), "H5Dwrite /tokens/sequence");
  } else {
    std::vector<int64_t> none(static_cast<size_t>(n), -1);
    m.write(m.d_seq, H5T_NATIVE_INT64, start, count, none.data(), "H5Dwrite /tokens/sequence");
  }
  m.write(m.d_pos, H5T_NATIVE_INT32, start, count, position.data(), "H5Dwrite /tokens/position");
  if (o.has_token_id)
    m.write(m.d_tok, H5T_NATIVE_INT64, start, count, token_id.data(), "H5Dwrite /tokens/token_id");
  if (o.has_domain)
    m.write(m.d_dom, H5T_NATIVE_INT32, start, count, domain.data(), "H5Dwrite /tokens/domain");
  if (o.has_rank)
    m.write(m.d_rank, H5T_NATIVE_INT32, start, count, rank.data(), "H5Dwrite /tokens/rank");
  for (hid_t d : {m.d_logits.get(), m.d_ids.get(), m.d_w.get()})
    if (d >= 0) m.extend(d, 1, total);
  m.tokens += n;
  return first;
}

void TraceWriter::write_logits(int32_t layer, int64_t first, int64_t n, const float* logits) {
  Impl& m = *impl_;
  if (m.o.kind != "logits") fail("trace writer: write_logits on an assignment trace");
  if (layer < 0 || layer >= m.o.num_layers || first < 0 || first + n > m.tokens)
    fail("trace writer: logits outside the appended rows");
  const int64_t E = m.o.num_experts;
  // NaN and +inf never; above the float16 range not in fp16 (values far below it become -inf,
  // which means "never chosen").
  for (int64_t i = 0; i < n * E; ++i) {
    const float x = logits[i];
    if (std::isnan(x) || x == std::numeric_limits<float>::infinity() || (m.o.fp16 && x > 65504.f))
      throw InputError(m.path + ": logit " + std::to_string(x) + " of layer " +
                       std::to_string(m.o.layer_ids[static_cast<size_t>(layer)]) + " token " +
                       std::to_string(first + i / E) + " expert " + std::to_string(i % E) +
                       (std::isnan(x) || std::isinf(x)
                            ? " is not finite"
                            : " exceeds the float16 range (use --dtype fp32)"));
  }
  const std::vector<hsize_t> start{static_cast<hsize_t>(layer), static_cast<hsize_t>(first), 0},
      count{1, static_cast<hsize_t>(n), static_cast<hsize_t>(E)};
  if (!m.o.fp16)
    return m.write(m.d_logits, H5T_NATIVE_FLOAT, start, count, logits, "H5Dwrite /logits");
  m.half_buf.resize(static_cast<size_t>(n * E));
  for (size_t i = 0; i < m.half_buf.size(); ++i) m.half_buf[i] = float_to_half(logits[i]);
  m.write(m.d_logits, m.half, start, count, m.half_buf.data(), "H5Dwrite /logits");
}

void TraceWriter::write_assignments(int32_t layer, int64_t first, int64_t n, const int32_t* ids,
                                    const float* weights) {
  Impl& m = *impl_;
  if (m.o.kind != "assignments") fail("trace writer: write_assignments on a logit trace");
  if (layer < 0 || layer >= m.o.num_layers || first < 0 || first + n > m.tokens)
    fail("trace writer: assignments outside the appended rows");
  const int32_t k = m.o.top_k, E = m.o.num_experts;
  for (int64_t i = 0; i < n * k; ++i)
    if (ids[i] < -1 || ids[i] >= E)
      fail("trace writer: expert id " + std::to_string(ids[i]) + " outside [0, " +
           std::to_string(E) + ")");
  const std::vector<hsize_t> start{static_cast<hsize_t>(layer), static_cast<hsize_t>(first), 0},
      count{1, static_cast<hsize_t>(n), static_cast<hsize_t>(k)};
  m.write(m.d_ids, H5T_NATIVE_INT32, start, count, ids, "H5Dwrite /expert_ids");
  m.write(m.d_w, H5T_NATIVE_FLOAT, start, count, weights, "H5Dwrite /weights");
}

void TraceWriter::finish() {
  Impl& m = *impl_;
  const TraceWriterOptions& o = m.o;
  if (m.tokens == 0)
    throw InputError("trace writer: no tokens to write (" + m.path + " not written)");
  m.step_offsets.push_back(m.tokens);
  const hsize_t S1 = m.step_offsets.size();
  {
    Handle space(check(H5Screate_simple(1, &S1, nullptr), "H5Screate_simple"), H5Sclose);
    Handle lcpl(check(H5Pcreate(H5P_LINK_CREATE), "H5Pcreate"), H5Pclose);
    check_status(H5Pset_create_intermediate_group(lcpl, 1), "H5Pset_create_intermediate_group");
    Handle d(check(H5Dcreate2(m.file, "/steps/offset", H5T_STD_I64LE, space, lcpl, H5P_DEFAULT,
                              H5P_DEFAULT),
                   "H5Dcreate /steps/offset"),
             H5Dclose);
    check_status(
        H5Dwrite(d, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, m.step_offsets.data()),
        "H5Dwrite /steps/offset");
  }
  const hid_t f = m.file;
  h5::write_attr(f, "format", kTraceFormatName);
  h5::write_attr(f, "format_version", kTraceFormatVersion);
  h5::write_attr(f, "kind", o.kind);
  h5::write_attr(f, "num_experts", static_cast<int64_t>(o.num_experts));
  h5::write_attr(f, "num_layers", static_cast<int64_t>(o.num_layers));
  h5::write_attr(f, "num_steps", static_cast<int64_t>(S1 - 1));
  h5::write_attr(f, "num_tokens", m.tokens);
  h5::write_attr(f, "top_k", static_cast<int64_t>(o.top_k));
  h5::write_attr(f, "variable_k", static_cast<int64_t>(o.variable_k ? 1 : 0));
  write_attr_ints(f, "layer_ids", o.layer_ids);
  h5::write_attr(f, "has_sequences", static_cast<int64_t>(o.has_sequences ? 1 : 0));
  h5::write_attr(f, "weights_are",
                 o.kind == "assignments" ? o.weights_are : std::string("unknown"));
  h5::write_attr(f, "model", o.model);
  h5::write_attr(f, "source", o.source);
  h5::write_attr(f, "capture_method", o.capture_method);
  if (!o.domain_experts.empty()) h5::write_attr(f, "domain_experts", o.domain_experts);
  h5::write_attr(f, "created_by",
                 o.created_by.empty() ? std::string("moebench ") + MOEBENCH_VERSION : o.created_by);
  for (Handle* d : {&m.d_step, &m.d_seq, &m.d_pos, &m.d_tok, &m.d_dom, &m.d_rank, &m.d_logits,
                    &m.d_ids, &m.d_w})
    d->reset();
  check_status(H5Fflush(m.file, H5F_SCOPE_LOCAL), "H5Fflush");
  m.file.reset();
  std::error_code ec;
  std::filesystem::rename(m.tmp, m.path, ec);
  if (ec) throw InputError(m.path + ": cannot rename " + m.tmp + " to it: " + ec.message());
  m.finished = true;
}

void write_counts_trace(const std::string& path, const TraceWriterOptions& opt, int32_t steps,
                        const std::vector<int64_t>& counts, const std::string& source_name) {
  TraceWriterOptions o = opt;
  h5::silence_error_stack();
  const int32_t L = o.num_layers, E = o.num_experts;
  if (E < 1 || L < 1 || steps < 1)
    throw InputError(source_name + ": needs >= 1 step, layer and expert");
  if (o.layer_ids.empty())
    for (int32_t l = 0; l < L; ++l) o.layer_ids.push_back(l);
  if (static_cast<int32_t>(o.layer_ids.size()) != L)
    throw InputError("trace writer: layer_ids and num_layers differ");
  if (counts.size() != static_cast<size_t>(steps) * L * E)
    fail("write_counts_trace: counts of the wrong size");
  const std::string problem = check_counts(counts.data(), 0, steps, L, E, o.layer_ids);
  if (!problem.empty()) throw InputError(source_name + ": " + problem);
  int64_t total = 0;
  for (int32_t s = 0; s < steps; ++s)
    for (int32_t e = 0; e < E; ++e) total += counts[(static_cast<size_t>(s) * L) * E + e];
  if (total == 0) throw InputError(source_name + ": every count is 0 (" + path + " not written)");
  if (std::filesystem::exists(path) && !o.force)
    throw InputError(path + ": exists (pass --force to replace it)");
  const std::string tmp = path + ".tmp";
  const hid_t f = H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  if (f < 0) throw InputError(tmp + ": cannot create file");
  try {
    {
      Handle file(f, H5Fclose);
      const hsize_t dims[3] = {static_cast<hsize_t>(steps), static_cast<hsize_t>(L),
                               static_cast<hsize_t>(E)};
      const hsize_t chunk[3] = {
          std::clamp<hsize_t>((1u << 16) / (static_cast<hsize_t>(L) * E), 1, dims[0]), dims[1],
          dims[2]};
      Handle space(check(H5Screate_simple(3, dims, nullptr), "H5Screate_simple"), H5Sclose);
      Handle dcpl(check(H5Pcreate(H5P_DATASET_CREATE), "H5Pcreate"), H5Pclose);
      check_status(H5Pset_chunk(dcpl, 3, chunk), "H5Pset_chunk");
      if (o.deflate_level > 0) {
        check_status(H5Pset_shuffle(dcpl), "H5Pset_shuffle");
        check_status(H5Pset_deflate(dcpl, static_cast<unsigned>(o.deflate_level)),
                     "H5Pset_deflate");
      }
      Handle d(
          check(H5Dcreate2(file, "/counts", H5T_STD_I64LE, space, H5P_DEFAULT, dcpl, H5P_DEFAULT),
                "H5Dcreate /counts"),
          H5Dclose);
      check_status(H5Dwrite(d, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, counts.data()),
                   "H5Dwrite /counts");
      h5::write_attr(file, "format", kTraceFormatName);
      h5::write_attr(file, "format_version", kTraceFormatVersion);
      h5::write_attr(file, "kind", std::string("counts"));
      h5::write_attr(file, "num_experts", static_cast<int64_t>(E));
      h5::write_attr(file, "num_layers", static_cast<int64_t>(L));
      h5::write_attr(file, "num_steps", static_cast<int64_t>(steps));
      h5::write_attr(file, "num_tokens", total);
      h5::write_attr(file, "top_k", static_cast<int64_t>(o.top_k));
      h5::write_attr(file, "variable_k", int64_t{0});
      write_attr_ints(file, "layer_ids", o.layer_ids);
      h5::write_attr(file, "has_sequences", int64_t{0});
      h5::write_attr(file, "weights_are", std::string("unknown"));
      h5::write_attr(file, "model", o.model);
      h5::write_attr(file, "source", o.source);
      h5::write_attr(file, "capture_method", o.capture_method);
      h5::write_attr(
          file, "created_by",
          o.created_by.empty() ? std::string("moebench ") + MOEBENCH_VERSION : o.created_by);
      check_status(H5Fflush(file, H5F_SCOPE_LOCAL), "H5Fflush");
    }
    std::error_code ec;
    std::filesystem::rename(tmp, path, ec);
    if (ec) throw InputError(path + ": cannot rename " + tmp + " to it: " + ec.message());
  } catch (...) {
    std::error_code ec;
    std::filesystem::remove(tmp, ec);
    throw;
  }
}

}  // namespace moe
