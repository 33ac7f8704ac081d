// NumPy .npy router logits: one file [tokens, experts] per layer (several --in files), or one file
// [layers, tokens, experts]. dtype float16, float32 or float64, little-endian, C order.
// --values probabilities takes log() of the entries. Streamed in blocks of rows.
// --token-table FILE.csv: per-token labels, a header row naming any of the columns sequence,
// position, domain, token, rank, then one row per token in token order (the row count must equal
// the tokens of the logits). Without position, positions count tokens within their sequence (or
// within the stream without sequence).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <memory>
#include <numeric>
#include <span>
#include <unordered_set>

#include "harness/core/error.hpp"
#include "workloads/import/importers.hpp"
#include "workloads/import/token_table.hpp"
#include "workloads/trace_file.hpp"

namespace moe {
namespace {

struct Npy {
  std::string path;
  std::ifstream in;
  std::string descr;
  std::vector<int64_t> shape;
  int elem = 0;  // bytes
  std::streamoff data_offset = 0;

  explicit Npy(const std::string& p) : path(p), in(p, std::ios::binary) {
    if (!in) throw InputError(path + ": cannot open file");
    char magic[8] = {};
    in.read(magic, 8);
    if (!in || std::memcmp(magic, "\x93NUMPY", 6) != 0)
      throw InputError(path + ": not a NumPy .npy file (bad magic)");
    const int major = static_cast<unsigned char>(magic[6]);
    uint32_t hlen = 0;
    if (major == 1) {
      unsigned char b[2];
      in.read(reinterpret_cast<char*>(b), 2);
      hlen = b[0] | (b[1] << 8);
    } else if (major == 2 || major == 3) {
      unsigned char b[4];
      in.read(reinterpret_cast<char*>(b), 4);
      hlen = b[0] | (b[1] << 8) | (b[2] << 16) | (static_cast<uint32_t>(b[3]) << 24);
    } else {
      throw InputError(path + ": .npy format version " + std::to_string(major) +
                       " is not supported");
    }
    {  // the header length comes from the file: no allocation beyond what the file holds
      const std::streamoff here = in.tellg();
      in.seekg(0, std::ios::end);
      const std::streamoff end = in.tellg();
      in.seekg(here);
      if (!in || here < 0 || static_cast<std::streamoff>(hlen) > end - here)
        throw InputError(path + ": truncated .npy header (" + std::to_string(hlen) +
                         " bytes announced, " +
                         std::to_string(std::max<std::streamoff>(0, end - here)) + " in the file)");
    }
    std::string header(hlen, '\0');
    in.read(header.data(), hlen);
    if (!in) throw InputError(path + ": truncated .npy header");
    data_offset = in.tellg();
    descr = value(header, "descr");
    if (descr.size() >= 2 && (descr.front() == '\'' || descr.front() == '"'))
      descr = descr.substr(1, descr.size() - 2);
    if (descr == "<f2" || descr == "|f2")
      elem = 2;
    else if (descr == "<f4")
      elem = 4;
    else if (descr == "<f8")
      elem = 8;
    else
      throw InputError(path + ": header field descr: dtype '" + descr +
                       "' is not supported (float16/32/64, little-endian)");
    if (value(header, "fortran_order") != "False")
      throw InputError(
          path + ": header field fortran_order: True is not supported (save a C-ordered array)");
    std::string s = value(header, "shape");
    s.erase(
        std::remove_if(s.begin(), s.end(), [](char c) { return c == '(' || c == ')' || c == ' '; }),
        s.end());
    size_t start = 0;
    while (start < s.size()) {
      const size_t comma = s.find(',', start);
      const std::string part =
          s.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
      if (!part.empty()) {
        size_t used = 0;
        int64_t d = -1;
        try {
          d = std::stoll(part, &used);
        } catch (const std::exception&) {
          used = 0;
        }
        if (used != part.size() || d < 1)
          throw InputError(path + ": header field shape: '" + part +
                           "' is not a positive dimension");
        shape.push_back(d);
      }
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
    if (shape.size() != 2 && shape.size() != 3)
      throw InputError(path + ": header field shape: " + std::to_string(shape.size()) +
                       " dimensions (expected [tokens, experts] or [layers, tokens, experts])");
    int64_t n = elem;
    for (int64_t d : shape) {
      if (d < 1) throw InputError(path + ": header field shape: empty dimension");
      if (d > std::numeric_limits<int64_t>::max() / n)
        throw InputError(path + ": header field shape: too large (overflows 64 bits)");
      n *= d;
    }
    in.seekg(0, std::ios::end);
    const std::streamoff size = in.tellg();
    if (size - data_offset < n)
      throw InputError(path + ": truncated data: " + std::to_string(size - data_offset) +
                       " bytes, the shape needs " + std::to_string(n));
  }

  std::string value(const std::string& header, const std::string& key) const {
    const size_t k = header.find("'" + key + "'");
    if (k == std::string::npos) throw InputError(path + ": .npy header has no '" + key + "'");
    size_t v = header.find(':', k) + 1;
    while (v < header.size() && header[v] == ' ') ++v;
    size_t end = v;
    if (header[v] == '(')
      end = header.find(')', v) + 1;
    else
      end = header.find_first_of(",}", v);
    return header.substr(v, end - v);
  }

  // Rows [row, row + n) of layer l (for 3-D arrays) as float32.
  void read(int64_t l, int64_t row, int64_t n, int64_t E, std::vector<float>& out,
            std::vector<char>& raw) {
    const int64_t T = shape[shape.size() - 2];
    in.seekg(data_offset + ((l * T + row) * E) * elem);
    raw.resize(static_cast<size_t>(n * E * elem));
    in.read(raw.data(), static_cast<std::streamsize>(raw.size()));
    if (!in) throw InputError(path + ": read error");
    out.resize(static_cast<size_t>(n * E));
    for (int64_t i = 0; i < n * E; ++i) {
      if (elem == 2) {
        uint16_t h;
        std::memcpy(&h, raw.data() + i * 2, 2);
        out[i] = half_to_float(h);
      } else if (elem == 4) {
        std::memcpy(&out[i], raw.data() + i * 4, 4);
      } else {
        double d;
        std::memcpy(&d, raw.data() + i * 8, 8);
        out[i] = static_cast<float>(d);
      }
      if (std::isnan(out[i]) || out[i] == INFINITY) {
        const int64_t t = row + i / E, e = i % E;
        throw InputError(path + ": element [" +
                         (shape.size() == 3 ? std::to_string(l) + ", " : "") + std::to_string(t) +
                         ", " + std::to_string(e) + "] is " +
                         (std::isnan(out[i]) ? "NaN" : "+inf"));
      }
    }
  }
};

}  // namespace

void import_npy(const ImportOptions& o) {
  if (o.inputs.empty()) throw InputError("trace convert --from npy: no --in files");
  if (o.values != "logits" && o.values != "probabilities")
    throw InputError("--values " + o.values + ": unknown (known: logits, probabilities)");
  std::vector<std::unique_ptr<Npy>> files;
  for (const auto& p : o.inputs) files.push_back(std::make_unique<Npy>(p));
  int64_t L = 0, T = 0, E = 0;
  if (files.size() == 1 && files[0]->shape.size() == 3) {
    L = files[0]->shape[0];
    T = files[0]->shape[1];
    E = files[0]->shape[2];
  } else {
    for (const auto& f : files) {
      if (f->shape.size() != 2)
        throw InputError(
            f->path +
            ": header field shape: with several --in files each must be [tokens, experts]");
      if (E == 0)
        T = f->shape[0], E = f->shape[1];
      else if (f->shape[0] != T || f->shape[1] != E)
        throw InputError(f->path + ": header field shape: [" + std::to_string(f->shape[0]) + ", " +
                         std::to_string(f->shape[1]) + "], " + files[0]->path + " is [" +
                         std::to_string(T) + ", " + std::to_string(E) + "]");
    }
    L = static_cast<int64_t>(files.size());
  }
  if (o.experts > 0 && o.experts != E)
    throw InputError(o.inputs[0] + ": " + std::to_string(E) + " experts but --experts " +
                     std::to_string(o.experts));
  std::vector<int64_t> layer_ids = o.layer_ids;
  if (layer_ids.empty()) {
    layer_ids.resize(static_cast<size_t>(L));
    std::iota(layer_ids.begin(), layer_ids.end(), 0);
  }
  if (static_cast<int64_t>(layer_ids.size()) != L)
    throw InputError("--layers names " + std::to_string(layer_ids.size()) +
                     " layers, the input has " + std::to_string(L));
  TokenTable table;
  if (!o.token_table.empty()) {
    table = read_token_table(o.token_table);
    if (table.rows != T)
      throw InputError(o.token_table + ": " + std::to_string(table.rows) +
                       " token rows, the logits of " + o.inputs[0] + " have " + std::to_string(T) +
                       " tokens (--token-table needs one row per token, in token order)");
  }
  TraceWriterOptions w;
  w.kind = "logits";
  w.has_sequences = table.has_seq;
  w.has_domain = table.has_dom;
  w.has_token_id = table.has_tok;
  w.has_rank = table.has_rank;
  w.domain_experts = o.domain_experts;
  w.num_experts = static_cast<int32_t>(E);
  w.num_layers = static_cast<int32_t>(L);
  w.layer_ids = layer_ids;
  w.fp16 = o.fp16;
  w.model = o.model;
  w.force = o.force;
  w.created_by = o.created_by;
  w.capture_method = "npy logits (" + files[0]->descr + ")";
  for (const auto& p : o.inputs) w.source += (w.source.empty() ? "" : ",") + p;
  TraceWriter writer(o.out, w);
  constexpr int64_t kBlock = 1 << 14;
  std::vector<float> buf;
  std::vector<char> raw;
  std::vector<int32_t> pos;
  // Tokens first (steps of --tokens-per-step), then each layer in blocks.
  for (int64_t row = 0; row < T;) {
    const int64_t step_end =
        o.tokens_per_step > 0 ? (row / o.tokens_per_step + 1) * o.tokens_per_step : T;
    const int64_t n = std::min({kBlock, step_end - row, T - row});
    const int32_t step = o.tokens_per_step > 0 ? static_cast<int32_t>(row / o.tokens_per_step) : 0;
    if (o.token_table.empty()) {
      pos.resize(static_cast<size_t>(n));
      std::iota(pos.begin(), pos.end(), static_cast<int32_t>(row));
      writer.append_tokens(step, n, {}, pos);
    } else {
      table.append(writer, step, row, n);
    }
    row += n;
  }
  for (int64_t l = 0; l < L; ++l)
    for (int64_t row = 0; row < T; row += kBlock) {
      const int64_t n = std::min(kBlock, T - row);
      Npy& f = files.size() == 1 ? *files[0] : *files[static_cast<size_t>(l)];
      f.read(files.size() == 1 ? l : 0, row, n, E, buf, raw);
      if (o.values == "probabilities")
        for (int64_t t = 0; t < n; ++t) {
          float* x = buf.data() + t * E;
          if (*std::max_element(x, x + E) <= 0.f)
            throw InputError(
                f.path + ": row " + std::to_string(row + t) +
                (files.size() == 1 && f.shape.size() == 3 ? " of layer " + std::to_string(l) : "") +
                ": every probability is 0");
          for (int64_t e = 0; e < E; ++e) x[e] = x[e] > 0.f ? std::log(x[e]) : -1e30f;
        }
      if (o.fp16 && o.values == "logits")
        for (int64_t i = 0; i < n * E; ++i)
          if (buf[i] > 65504.f)
            throw InputError(
                f.path + ": element [" +
                (files.size() == 1 && f.shape.size() == 3 ? std::to_string(l) + ", " : "") +
                std::to_string(row + i / E) + ", " + std::to_string(i % E) +
                "] = " + std::to_string(buf[i]) + " exceeds the float16 range (use --dtype fp32)");
      writer.write_logits(static_cast<int32_t>(l), row, n, buf.data());
    }
  writer.finish();
}

}  // namespace moe
