// CSV with one column per expert (`expert_0` .. `expert_{E-1}`, prefix --expert-prefix), one file
// per layer, one row per token, a header row. Rows are either dense router logits (or
// probabilities, --values probabilities) over all experts, or zero-filled sparse rows whose
// non-zero entries are the chosen experts' weights (as in the FLAME-MoE trace). --kind auto takes
// rows with at most half the experts non-zero and no negative entry as sparse assignments.
// Optional columns by --field: position=COL, sequence=COL, token=COL (vocabulary id), domain=COL
// (an integer label >= 0 per token: the domain of labelled captures, workloads/TRACE_FORMAT.md).
#include <algorithm>
#include <charconv>
#include <cmath>
#include <fstream>
#include <limits>
#include <memory>
#include <numeric>
#include <unordered_set>

#include "harness/core/error.hpp"
#include "workloads/import/importers.hpp"
#include "workloads/import/token_table.hpp"
#include "workloads/import/weights_check.hpp"
#include "workloads/trace_file.hpp"

namespace moe {
namespace {

struct Columns {
  std::vector<int32_t> expert;  // column of expert e
  int32_t position = -1, sequence = -1, token = -1, domain = -1;
  size_t count = 0;
};

void split(const std::string& line, std::vector<std::string_view>& out) {
  out.clear();
  size_t start = 0;
  while (true) {
    const size_t comma = line.find(',', start);
    std::string_view f(line.data() + start,
                       (comma == std::string::npos ? line.size() : comma) - start);
    while (!f.empty() && (f.front() == ' ' || f.front() == '"')) f.remove_prefix(1);
    while (!f.empty() && (f.back() == ' ' || f.back() == '"' || f.back() == '\r'))
      f.remove_suffix(1);
    out.push_back(f);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
}

class CsvFile {
 public:
  CsvFile(const std::string& path, const ImportOptions& o) : path_(path), in_(path) {
    if (!in_) throw InputError(path + ": cannot open file");
    std::string header;
    if (!std::getline(in_, header)) throw InputError(path + ": empty file (expected a header row)");
    line_ = 1;
    header_storage_ = std::move(header);  // names_ views it: it lives as long as the file
    split(header_storage_, names_);
    cols_.count = names_.size();
    std::vector<std::pair<int64_t, int32_t>> experts;
    for (size_t c = 0; c < names_.size(); ++c) {
      const std::string_view n = names_[c];
      if (n.substr(0, o.expert_prefix.size()) == o.expert_prefix) {
        int64_t e = -1;
        const auto digits = n.substr(o.expert_prefix.size());
        const auto r = std::from_chars(digits.data(), digits.data() + digits.size(), e);
        if (r.ec != std::errc() || r.ptr != digits.data() + digits.size() || e < 0)
          throw InputError(path + ": line 1: column '" + std::string(n) + "' is not " +
                           o.expert_prefix + "<number>");
        experts.emplace_back(e, static_cast<int32_t>(c));
      }
    }
    if (experts.empty())
      throw InputError(path + ": line 1: no column named " + o.expert_prefix + "<number>");
    std::sort(experts.begin(), experts.end());
    for (size_t i = 0; i < experts.size(); ++i)
      if (experts[i].first != static_cast<int64_t>(i))
        throw InputError(path + ": line 1: expert columns must be " + o.expert_prefix + "0 .. " +
                         o.expert_prefix + std::to_string(experts.size() - 1) + " (column " +
                         o.expert_prefix + std::to_string(i) + " is missing or repeated)");
    for (const auto& [e, c] : experts) cols_.expert.push_back(c);
    auto find = [&](const char* field) {
      const auto it = o.fields.find(field);
      if (it == o.fields.end()) return -1;
      for (size_t c = 0; c < names_.size(); ++c)
        if (names_[c] == it->second) return static_cast<int32_t>(c);
      throw InputError(path + ": line 1: no column '" + it->second + "' (for --field " + field +
                       "=" + it->second + ")");
    };
    cols_.position = find("position");
    cols_.sequence = find("sequence");
    cols_.token = find("token");
    cols_.domain = find("domain");
    for (const auto& [k, v] : o.fields)
      if (k != "position" && k != "sequence" && k != "token" && k != "domain")
        throw InputError("--field " + k + "=" + v +
                         ": csv takes position, sequence, token and domain");
  }
  int32_t experts() const { return static_cast<int32_t>(cols_.expert.size()); }
  const Columns& columns() const { return cols_; }

  // Next data row: values[E] and the optional integer columns. false at the end of the file.
  bool next(std::vector<float>& values, int64_t& position, int64_t& sequence, int64_t& token) {
    std::string line;
    while (true) {
      if (!std::getline(in_, line)) return false;
      ++line_;
      if (!line.empty() && line.find_first_not_of(" \r") != std::string::npos) break;
    }
    split(line, fields_);
    if (fields_.size() != cols_.count)
      throw InputError(path_ + ": line " + std::to_string(line_) + ": " +
                       std::to_string(fields_.size()) + " fields, the header has " +
                       std::to_string(cols_.count));
    const int32_t E = experts();
    values.resize(static_cast<size_t>(E));
    for (int32_t e = 0; e < E; ++e) values[e] = number(cols_.expert[e]);
    position = cols_.position >= 0 ? integer(cols_.position) : -1;
    sequence = cols_.sequence >= 0 ? integer(cols_.sequence) : -1;
    token = cols_.token >= 0 ? integer(cols_.token) : -1;
    domain_ = -1;
    if (cols_.domain >= 0) {
      const int64_t d = integer(cols_.domain);
      if (d < 0 || d > std::numeric_limits<int32_t>::max())
        bad(cols_.domain, "domain " + std::to_string(d) + " is not in [0, 2^31)");
      domain_ = static_cast<int32_t>(d);
    }
    return true;
  }
  int32_t domain() const { return domain_; }  // of the last row read (-1 without a domain column)
  int64_t line() const { return line_; }
  const std::string& path() const { return path_; }

 private:
  [[noreturn]] void bad(int32_t c, const std::string& what) const {
    throw InputError(path_ + ": line " + std::to_string(line_) + ": field " +
                     std::string(names_[c]) + ": " + what);
  }
  float number(int32_t c) const {
    const std::string_view f = fields_[c];
    double v = 0;
    const auto r = std::from_chars(f.data(), f.data() + f.size(), v);
    if (r.ec != std::errc() || r.ptr != f.data() + f.size())
      bad(c, "'" + std::string(f) + "' is not a number");
    if (!std::isfinite(v)) bad(c, "'" + std::string(f) + "' is not finite");
    return static_cast<float>(v);
  }
  int64_t integer(int32_t c) const {
    const std::string_view f = fields_[c];
    int64_t v = 0;
    const auto r = std::from_chars(f.data(), f.data() + f.size(), v);
    if (r.ec != std::errc() || r.ptr != f.data() + f.size())
      bad(c, "'" + std::string(f) + "' is not an integer");
    return v;
  }

  std::string path_;
  std::ifstream in_;
  std::vector<std::string_view> names_;
  std::vector<std::string_view> fields_;
  std::string header_storage_;
  Columns cols_;
  int64_t line_ = 0;
  int32_t domain_ = -1;
};

}  // namespace

void import_csv(const ImportOptions& o) {
  if (o.inputs.empty()) throw InputError("trace convert --from csv: no --in files");
  std::vector<int64_t> layer_ids = o.layer_ids;
  if (layer_ids.empty()) {
    layer_ids.resize(o.inputs.size());
    std::iota(layer_ids.begin(), layer_ids.end(), 0);
  }
  if (layer_ids.size() != o.inputs.size())
    throw InputError("--layers names " + std::to_string(layer_ids.size()) + " layers for " +
                     std::to_string(o.inputs.size()) + " --in files (one file per layer)");
  if (o.values != "logits" && o.values != "probabilities")
    throw InputError("--values " + o.values + ": unknown (known: logits, probabilities)");

  // Pass 1: validate every file, find E, the rows, and whether rows are sparse assignments.
  int32_t E = 0;
  int64_t rows = -1;
  int32_t max_nz = 0, min_nz = 1 << 30;
  bool negative = false, has_pos = false, has_seq = false, has_tok = false, has_dom = false;
  std::vector<float> v;
  for (const auto& path : o.inputs) {
    CsvFile f(path, o);
    if (E == 0) {
      E = f.experts();
      has_pos = f.columns().position >= 0;
      has_seq = f.columns().sequence >= 0;
      has_tok = f.columns().token >= 0;
      has_dom = f.columns().domain >= 0;
    } else if (f.experts() != E) {
      throw InputError(path + ": " + std::to_string(f.experts()) + " expert columns, " +
                       o.inputs[0] + " has " + std::to_string(E));
    }
    if (o.experts > 0 && o.experts != E)
      throw InputError(path + ": " + std::to_string(E) + " expert columns but --experts " +
                       std::to_string(o.experts));
    int64_t n = 0, pos, seq, tok;
    std::unordered_set<int64_t> ended;  // sequences already left behind: rows must be grouped
    int64_t prev_seq = std::numeric_limits<int64_t>::min();
    while (f.next(v, pos, seq, tok)) {
      if (has_seq && seq != prev_seq) {
        if (ended.count(seq))
          throw InputError(
              path + ": line " + std::to_string(f.line()) + ": field " + o.fields.at("sequence") +
              ": sequence " + std::to_string(seq) +
              " appears again after other sequences (rows must be grouped by sequence)");
        if (prev_seq != std::numeric_limits<int64_t>::min()) ended.insert(prev_seq);
        prev_seq = seq;
      }
      int32_t nz = 0;
      for (float x : v) {
        nz += x != 0.f;
        negative = negative || x < 0.f;
      }
      max_nz = std::max(max_nz, nz);
      min_nz = std::min(min_nz, nz);
      ++n;
    }
    if (n == 0) throw InputError(path + ": no data rows");
    if (rows >= 0 && n != rows)
      throw InputError(path + ": " + std::to_string(n) + " rows, " + o.inputs[0] + " has " +
                       std::to_string(rows) + " (every layer file needs the same tokens)");
    rows = n;
  }
  TokenTable table;  // --token-table: the tokens' metadata from a file of its own
  if (!o.token_table.empty()) {
    if (has_pos || has_seq || has_tok || has_dom)
      throw InputError("--token-table " + o.token_table +
                       ": the csv columns already give token fields (--field "
                       "position|sequence|token|domain); use one or the other");
    table = read_token_table(o.token_table);
    if (table.rows != rows)
      throw InputError(o.token_table + ": " + std::to_string(table.rows) + " token rows, " +
                       o.inputs[0] + " has " + std::to_string(rows) +
                       " (--token-table needs one row per token, in token order)");
    has_seq = table.has_seq;
    has_tok = table.has_tok;
    has_dom = table.has_dom;
  }
  if (o.kind != "auto" && o.kind != "logits" && o.kind != "assignments")
    throw InputError("--kind " + o.kind + ": unknown (known: auto, logits, assignments)");
  const std::string kind =
      o.kind != "auto" ? o.kind : (max_nz * 2 <= E && !negative ? "assignments" : "logits");

  TraceWriterOptions w;
  w.kind = kind;
  w.num_experts = E;
  w.num_layers = static_cast<int32_t>(o.inputs.size());
  w.layer_ids = layer_ids;
  w.top_k = kind == "assignments" ? std::max(max_nz, 1) : 0;
  w.variable_k = kind == "assignments" && min_nz != max_nz;
  w.fp16 = o.fp16;
  w.has_sequences = has_seq;
  w.has_token_id = has_tok;
  w.has_domain = has_dom;
  w.has_rank = table.has_rank;
  w.domain_experts = o.domain_experts;
  w.weights_are = o.weights_are;
  w.model = o.model;
  w.force = o.force;
  w.created_by = o.created_by;
  w.capture_method = "csv, one column per expert (" +
                     std::string(kind == "assignments" ? "zero-filled sparse rows" : "dense rows") +
                     ")";
  std::string source;
  for (const auto& p : o.inputs) source += (source.empty() ? "" : ",") + p;
  w.source = source;
  TraceWriter writer(o.out, w);

  // Pass 2: stream every file in blocks; the first file appends the token metadata.
  constexpr int64_t kBlock = 1 << 16;
  const int32_t k = w.top_k;
  std::vector<float> logits, weights;
  std::vector<int32_t> ids;
  std::vector<int64_t> seq, tok;
  std::vector<int32_t> pos, dom;
  std::vector<std::pair<float, int32_t>> chosen;
  for (size_t l = 0; l < o.inputs.size(); ++l) {
    CsvFile f(o.inputs[l], o);
    int64_t row = 0;
    bool more = true;
    while (more) {
      logits.clear();
      ids.clear();
      weights.clear();
      seq.clear();
      pos.clear();
      tok.clear();
      dom.clear();
      int64_t n = 0;
      // A block never crosses a step boundary.
      const int64_t step_end =
          o.tokens_per_step > 0 ? (row / o.tokens_per_step + 1) * o.tokens_per_step : rows;
      const int64_t limit = std::min(kBlock, step_end - row);
      int64_t p, s, t;
      while (n < limit && (more = f.next(v, p, s, t))) {
        if (kind == "logits") {
          if (o.values == "probabilities" && *std::max_element(v.begin(), v.end()) <= 0.f)
            throw InputError(f.path() + ": line " + std::to_string(f.line()) +
                             ": every probability of the row is 0");
          for (int32_t e = 0; e < E; ++e)
            if (o.fp16 && o.values == "logits" && v[e] > 65504.f)
              throw InputError(f.path() + ": line " + std::to_string(f.line()) + ": field " +
                               o.expert_prefix + std::to_string(e) + ": " + std::to_string(v[e]) +
                               " exceeds the float16 range (use --dtype fp32)");
          for (float& x : v)
            if (o.values == "probabilities") x = x > 0.f ? std::log(x) : -1e30f;
          logits.insert(logits.end(), v.begin(), v.end());
        } else {
          chosen.clear();
          for (int32_t e = 0; e < E; ++e)
            if (v[e] != 0.f) chosen.emplace_back(v[e], e);
          std::stable_sort(chosen.begin(), chosen.end(),
                           [](const auto& a, const auto& b) { return a.first > b.first; });
          for (int32_t j = 0; j < k; ++j) {
            ids.push_back(j < static_cast<int32_t>(chosen.size()) ? chosen[j].second : -1);
            weights.push_back(j < static_cast<int32_t>(chosen.size()) ? chosen[j].first : 0.f);
          }
          const std::string why =
              weights_contradiction(o.weights_are, weights.data() + weights.size() - k,
                                    static_cast<int32_t>(std::min<size_t>(chosen.size(), k)));
          if (!why.empty())
            throw InputError(f.path() + ": line " + std::to_string(f.line()) + ": fields " +
                             o.expert_prefix + "*: " + why);
        }
        pos.push_back(static_cast<int32_t>(p >= 0 ? p : row + n));
        seq.push_back(s);
        tok.push_back(t);
        dom.push_back(f.domain());
        ++n;
      }
      if (n == 0) break;
      if (l == 0 && !o.token_table.empty()) {
        const int32_t step =
            o.tokens_per_step > 0 ? static_cast<int32_t>(row / o.tokens_per_step) : 0;
        table.append(writer, step, row, n);
      } else if (l == 0) {
        const int32_t step =
            o.tokens_per_step > 0 ? static_cast<int32_t>(row / o.tokens_per_step) : 0;
        writer.append_tokens(
            step, n, has_seq ? std::span<const int64_t>(seq) : std::span<const int64_t>{}, pos,
            has_tok ? std::span<const int64_t>(tok) : std::span<const int64_t>{},
            has_dom ? std::span<const int32_t>(dom) : std::span<const int32_t>{});
      }
      if (kind == "logits")
        writer.write_logits(static_cast<int32_t>(l), row, n, logits.data());
      else
        writer.write_assignments(static_cast<int32_t>(l), row, n, ids.data(), weights.data());
      row += n;
    }
  }
  writer.finish();
}

std::vector<int64_t> parse_layer_list(const std::string& spec) {
  std::vector<int64_t> out;
  size_t start = 0;
  while (start <= spec.size()) {
    const size_t comma = spec.find(',', start);
    const std::string part =
        spec.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    const size_t dash = part.find('-', 1);
    try {
      size_t used = 0;
      if (dash == std::string::npos) {
        out.push_back(std::stoll(part, &used));
        if (used != part.size()) throw std::invalid_argument(part);
      } else {
        const int64_t a = std::stoll(part.substr(0, dash), &used),
                      b = std::stoll(part.substr(dash + 1));
        if (b < a) throw std::invalid_argument(part);
        for (int64_t x = a; x <= b; ++x) out.push_back(x);
      }
    } catch (const std::exception&) {
      throw InputError("--layers " + spec + ": '" + part + "' is not a layer number or range A-B");
    }
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

}  // namespace moe
