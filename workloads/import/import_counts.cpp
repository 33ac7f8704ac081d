// Count-only captures (kind counts, workloads/TRACE_FORMAT.md "Count-only traces"): per-step x
// layer x expert token counts, no per-token data.
//
// counts-csv: long layout, a header row naming the columns step, layer, expert, count (any order,
//   no others), then one row per (step, layer, expert) with a count; combinations not listed are 0.
//   Steps and layers are the model's numbers (any integers >= 0, any order): the trace keeps the
//   distinct steps in ascending order as steps 0..S-1 and the distinct layers as its layer_ids.
//   Experts are 0..E-1 (E = --experts, else the largest id + 1). A (step, layer, expert) twice is
//   an error naming both lines.
// counts-npy: one .npy [steps, layers, experts] of integers (int8..int64, uint8..uint64,
//   little-endian, C order); --layers names the model's layers.
// sglang-stat: SGLang's expert-distribution recorder in `stat` mode dumps a torch.save pickle with
//   `logical_count` [steps, layers, logical experts]; workloads/capture/sglang_stat_to_npy.py turns
//   it into the .npy this importer reads (a pickle is refused with that command).
// Every count must be >= 0 and every layer of a step must count the same assignments (errors name
// the file, the line or element, and the field).
#include <algorithm>
#include <charconv>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <set>

#include "harness/core/error.hpp"
#include "workloads/import/importers.hpp"
#include "workloads/import/token_table.hpp"
#include "workloads/trace_file.hpp"

namespace moe {
namespace {

TraceWriterOptions counts_options(const ImportOptions& o, const std::string& method) {
  TraceWriterOptions w;
  w.kind = "counts";
  w.top_k = std::max(o.top_k, 0);
  w.model = o.model;
  w.force = o.force;
  w.created_by = o.created_by;
  w.capture_method = method;
  for (const auto& p : o.inputs) w.source += (w.source.empty() ? "" : ",") + p;
  return w;
}

void refuse_options(const ImportOptions& o, const std::string& from) {
  if (o.inputs.size() != 1)
    throw InputError("trace convert --from " + from + ": one --in file (got " +
                     std::to_string(o.inputs.size()) + ")");
  if (!o.fields.empty() || !o.domain_experts.empty() || !o.token_table.empty() ||
      o.tokens_per_step > 0)
    throw InputError("trace convert --from " + from +
                     ": --field, --domain-experts, --token-table and --tokens-per-step do not "
                     "apply to count-only "
                     "captures (no per-token data)");
}

}  // namespace

void import_counts_csv(const ImportOptions& o) {
  refuse_options(o, "counts-csv");
  const std::string& path = o.inputs[0];
  std::ifstream in(path);
  if (!in) throw InputError(path + ": cannot open file");
  std::string line;
  if (!std::getline(in, line))
    throw InputError(path + ": empty file (expected a header row step,layer,expert,count)");
  const std::vector<std::string> names = split_csv_line(line);
  static const char* const kNames[] = {"step", "layer", "expert", "count"};
  std::vector<int> col(4, -1);
  for (size_t c = 0; c < names.size(); ++c) {
    int k = -1;
    for (int i = 0; i < 4; ++i)
      if (names[c] == kNames[i]) k = i;
    if (k < 0)
      throw InputError(path + ": line 1: column '" + names[c] +
                       "' is not one of step, layer, expert, count");
    if (col[static_cast<size_t>(k)] >= 0)
      throw InputError(path + ": line 1: column '" + names[c] + "' twice");
    col[static_cast<size_t>(k)] = static_cast<int>(c);
  }
  for (int i = 0; i < 4; ++i)
    if (col[static_cast<size_t>(i)] < 0)
      throw InputError(path + ": line 1: no column '" + kNames[i] +
                       "' (the header must name step, layer, expert, count)");
  struct Row {
    int64_t v[4];
    int64_t line;
  };
  std::vector<Row> rows;
  std::set<int64_t> steps, layers;
  int64_t max_expert = -1, n = 1;
  while (std::getline(in, line)) {
    ++n;
    if (line.find_first_not_of(" \r") == std::string::npos) continue;
    const std::vector<std::string> f = split_csv_line(line);
    if (f.size() != names.size())
      throw InputError(path + ": line " + std::to_string(n) + ": " + std::to_string(f.size()) +
                       " fields, the header has " + std::to_string(names.size()));
    Row r{{0, 0, 0, 0}, n};
    for (int i = 0; i < 4; ++i) {
      const std::string& x = f[static_cast<size_t>(col[static_cast<size_t>(i)])];
      int64_t v = 0;
      const auto res = std::from_chars(x.data(), x.data() + x.size(), v);
      if (x.empty() || res.ec != std::errc() || res.ptr != x.data() + x.size())
        throw InputError(path + ": line " + std::to_string(n) + ": field " + kNames[i] + ": '" + x +
                         "' is not an integer");
      if (v < 0)
        throw InputError(path + ": line " + std::to_string(n) + ": field " + kNames[i] + ": " + x +
                         (i == 3 ? " is a negative count" : " is negative"));
      r.v[i] = v;
    }
    if (o.experts > 0 && r.v[2] >= o.experts)
      throw InputError(path + ": line " + std::to_string(n) + ": field expert: " +
                       std::to_string(r.v[2]) + " outside [0, " + std::to_string(o.experts) +
                       ") (--experts " + std::to_string(o.experts) + ")");
    if (r.v[2] >= (int64_t{1} << 24))
      throw InputError(path + ": line " + std::to_string(n) +
                       ": field expert: " + std::to_string(r.v[2]) + " is too large");
    steps.insert(r.v[0]);
    layers.insert(r.v[1]);
    max_expert = std::max(max_expert, r.v[2]);
    rows.push_back(r);
  }
  if (rows.empty()) throw InputError(path + ": no data rows");
  const int64_t E = o.experts > 0 ? o.experts : max_expert + 1;
  const int64_t S = static_cast<int64_t>(steps.size()), L = static_cast<int64_t>(layers.size());
  if (S * L * E > (int64_t{1} << 31))
    throw InputError(path + ": " + std::to_string(S) + " steps x " + std::to_string(L) +
                     " layers x " + std::to_string(E) + " experts is too large");
  std::map<int64_t, int64_t> step_index, layer_index;
  for (int64_t s : steps) step_index.emplace(s, static_cast<int64_t>(step_index.size()));
  for (int64_t l : layers) layer_index.emplace(l, static_cast<int64_t>(layer_index.size()));
  std::vector<int64_t> counts(static_cast<size_t>(S * L * E), 0);
  std::vector<int64_t> line_of(counts.size(), 0);
  for (const Row& r : rows) {
    const size_t i =
        static_cast<size_t>((step_index[r.v[0]] * L + layer_index[r.v[1]]) * E + r.v[2]);
    if (line_of[i] != 0)
      throw InputError(path + ": line " + std::to_string(r.line) + ": step " +
                       std::to_string(r.v[0]) + " layer " + std::to_string(r.v[1]) + " expert " +
                       std::to_string(r.v[2]) + " again (first on line " +
                       std::to_string(line_of[i]) + ")");
    line_of[i] = r.line;
    counts[i] = r.v[3];
  }
  TraceWriterOptions w = counts_options(o, "counts csv (step, layer, expert, count)");
  w.num_experts = static_cast<int32_t>(E);
  w.num_layers = static_cast<int32_t>(L);
  w.layer_ids.assign(layers.begin(), layers.end());
  if (!o.layer_ids.empty())
    throw InputError("--layers: counts-csv takes the layer numbers from its layer column");
  // Problems named by the model's step numbers, not the trace's.
  const std::string problem =
      check_counts(counts.data(), 0, static_cast<int32_t>(S), static_cast<int32_t>(L),
                   static_cast<int32_t>(E), w.layer_ids);
  if (!problem.empty()) {
    size_t end = 5;  // problem = "step N..." with N the trace's step: name the model's step
    while (end < problem.size() && problem[end] >= '0' && problem[end] <= '9') ++end;
    const int64_t s = std::stoll(problem.substr(5, end - 5));
    const int64_t model_step = *std::next(steps.begin(), s);
    throw InputError(path + ": step " + std::to_string(model_step) + problem.substr(end));
  }
  write_counts_trace(o.out, w, static_cast<int32_t>(S), counts, path);
}

void import_counts_npy(const ImportOptions& o, const std::string& from) {
  refuse_options(o, from);
  const std::string& path = o.inputs[0];
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(path + ": cannot open file");
  char magic[8] = {};
  in.read(magic, 8);
  if (!in || std::memcmp(magic, "\x93NUMPY", 6) != 0) {
    if (from == "sglang-stat" &&
        (std::memcmp(magic, "PK", 2) == 0 || static_cast<unsigned char>(magic[0]) == 0x80))
      throw InputError(path +
                       ": a torch.save pickle: convert it first with python3 "
                       "workloads/capture/sglang_stat_to_npy.py " +
                       path + " OUT.npy, then --from sglang-stat --in OUT.npy");
    throw InputError(path + ": not a NumPy .npy file (bad magic)");
  }
  const int major = static_cast<unsigned char>(magic[6]);
  uint32_t hlen = 0;
  if (major == 1) {
    unsigned char b[2] = {};
    in.read(reinterpret_cast<char*>(b), 2);
    hlen = static_cast<uint32_t>(b[0] | (b[1] << 8));
  } else if (major == 2 || major == 3) {
    unsigned char b[4] = {};
    in.read(reinterpret_cast<char*>(b), 4);
    hlen = b[0] | (b[1] << 8) | (b[2] << 16) | (static_cast<uint32_t>(b[3]) << 24);
  } else {
    throw InputError(path + ": .npy format version " + std::to_string(major) + " is not supported");
  }
  const std::streamoff here = in.tellg();
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  if (!in || here < 0 || static_cast<std::streamoff>(hlen) > size - here)
    throw InputError(path + ": truncated .npy header");
  in.seekg(here);
  std::string header(hlen, '\0');
  in.read(header.data(), hlen);
  auto value = [&](const std::string& key) {
    const size_t k = header.find("'" + key + "'");
    if (k == std::string::npos) throw InputError(path + ": .npy header has no '" + key + "'");
    size_t v = header.find(':', k);
    if (v == std::string::npos)
      throw InputError(path + ": .npy header field " + key + " has no value");
    ++v;
    while (v < header.size() && header[v] == ' ') ++v;
    const size_t end = v < header.size() && header[v] == '(' ? header.find(')', v) + 1
                                                             : header.find_first_of(",}", v);
    return header.substr(v, end == std::string::npos ? std::string::npos : end - v);
  };
  std::string descr = value("descr");
  if (descr.size() >= 2 && (descr.front() == '\'' || descr.front() == '"'))
    descr = descr.substr(1, descr.size() - 2);
  // Integers only: little-endian (or byte-sized) signed/unsigned.
  const bool ok_order =
      descr.size() == 3 && (descr[0] == '<' || (descr[0] == '|' && descr[2] == '1'));
  const char kind = descr.size() == 3 ? descr[1] : '?';
  const int elem = descr.size() == 3 ? descr[2] - '0' : 0;
  if (!ok_order || (kind != 'i' && kind != 'u') ||
      (elem != 1 && elem != 2 && elem != 4 && elem != 8))
    throw InputError(
        path + ": header field descr: dtype '" + descr +
        "' is not an integer type (counts take int8..int64 or uint8..uint64, little-endian)");
  if (value("fortran_order") != "False")
    throw InputError(
        path + ": header field fortran_order: True is not supported (save a C-ordered array)");
  std::string shape_text = value("shape");
  std::vector<int64_t> shape;
  {
    std::string s = shape_text;
    s.erase(
        std::remove_if(s.begin(), s.end(), [](char c) { return c == '(' || c == ')' || c == ' '; }),
        s.end());
    size_t start = 0;
    while (start < s.size()) {
      const size_t comma = s.find(',', start);
      const std::string part =
          s.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
      if (!part.empty()) {
        int64_t d = -1;
        const auto r = std::from_chars(part.data(), part.data() + part.size(), d);
        if (r.ec != std::errc() || r.ptr != part.data() + part.size() || d < 1)
          throw InputError(path + ": header field shape: '" + part +
                           "' is not a positive dimension");
        shape.push_back(d);
      }
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
  }
  if (shape.size() != 3)
    throw InputError(path + ": header field shape: " + shape_text + " has " +
                     std::to_string(shape.size()) +
                     " dimensions (expected [steps, layers, experts])");
  const int64_t S = shape[0], L = shape[1], E = shape[2];
  if (S > (1 << 30) || L > (1 << 20) || E > (1 << 24) || S * L * E > (int64_t{1} << 31))
    throw InputError(path + ": header field shape: " + shape_text + " is too large");
  const int64_t n = S * L * E;
  if (size - here - static_cast<std::streamoff>(hlen) < n * elem)
    throw InputError(path + ": truncated data: " +
                     std::to_string(size - here - static_cast<std::streamoff>(hlen)) +
                     " bytes, the shape needs " + std::to_string(n * elem));
  if (o.experts > 0 && o.experts != E)
    throw InputError(path + ": " + std::to_string(E) + " experts but --experts " +
                     std::to_string(o.experts));
  std::vector<char> raw(static_cast<size_t>(n * elem));
  in.read(raw.data(), static_cast<std::streamsize>(raw.size()));
  if (!in) throw InputError(path + ": read error");
  std::vector<int64_t> counts(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const char* p = raw.data() + i * elem;
    int64_t v = 0;
    if (kind == 'i') {
      if (elem == 1) {
        int8_t x;
        std::memcpy(&x, p, 1);
        v = x;
      } else if (elem == 2) {
        int16_t x;
        std::memcpy(&x, p, 2);
        v = x;
      } else if (elem == 4) {
        int32_t x;
        std::memcpy(&x, p, 4);
        v = x;
      } else {
        std::memcpy(&v, p, 8);
      }
    } else {
      uint64_t x = 0;
      std::memcpy(&x, p, static_cast<size_t>(elem));
      if (x > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        throw InputError(path + ": element [" + std::to_string(i / (L * E)) + ", " +
                         std::to_string(i / E % L) + ", " + std::to_string(i % E) + "]: count " +
                         std::to_string(x) + " is too large");
      v = static_cast<int64_t>(x);
    }
    if (v < 0)
      throw InputError(path + ": element [" + std::to_string(i / (L * E)) + ", " +
                       std::to_string(i / E % L) + ", " + std::to_string(i % E) + "]: count " +
                       std::to_string(v) + " is negative");
    counts[static_cast<size_t>(i)] = v;
  }
  TraceWriterOptions w = counts_options(
      o, from == "sglang-stat" ? "sglang expert-distribution recorder, stat mode (logical_count)"
                               : "counts npy (" + descr + ")");
  w.num_experts = static_cast<int32_t>(E);
  w.num_layers = static_cast<int32_t>(L);
  w.layer_ids = o.layer_ids;
  if (!w.layer_ids.empty() && static_cast<int64_t>(w.layer_ids.size()) != L)
    throw InputError("--layers names " + std::to_string(w.layer_ids.size()) + " layers, " + path +
                     " has " + std::to_string(L));
  write_counts_trace(o.out, w, static_cast<int32_t>(S), counts, path);
}

}  // namespace moe
