#include "analysis/report_cli.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>
#include <set>
#include <sstream>

#include "analysis/claims.hpp"
#include "analysis/convergence.hpp"
#include "harness/core/error.hpp"

namespace moe {

namespace {

constexpr const char* kReportUsage =
    "usage: moebench report FILE [options]\n"
    "       moebench report A.h5 B.h5 [C.h5 ...] --compare [--vary DIMENSION] [options]\n"
    "  --format text|md|csv|json  output format (default text); every format holds the same "
    "numbers\n"
    "  --baseline ROUTER          add delta columns against ROUTER: dispatch bytes, inter-node "
    "bytes,\n"
    "                             max tokens per expert, modelled and measured all-to-all time\n"
    "  --per-layer, --per-step    add per-layer (mean over steps) / per-step (mean over layers) "
    "rows\n"
    "  --compare                  several runs side by side, matched by router; deltas against the "
    "first file;\n"
    "                             configuration differences beyond the compared dimension are "
    "flagged\n"
    "  --vary DIM[,DIM]           the compared dimension (cluster, placement, workload, capacity, "
    "dedup, shape,\n"
    "                             routers, or a config key); default: inferred from the "
    "differences\n"
    "  --claims                   the seed claims measured in the file (text, md, json)\n"
    "  --warmup-steps N           leave out the first N steps of every file (stateful routers'\n"
    "                             cold start; the convergence lines say from which step each "
    "settled)\n";

// ---------------------------------------------------------------- JSON flattening (config
// attribute)

class FlatJson {
 public:
  FlatJson(const std::string& s, const std::string& what) : s_(s), what_(what) {}
  std::map<std::string, std::string> parse() {
    ws();
    if (peek() != '{') fail("expected an object");
    object("");
    ws();
    if (i_ != s_.size()) fail("trailing characters");
    return out_;
  }

 private:
  const std::string& s_;
  const std::string& what_;
  size_t i_ = 0;
  std::map<std::string, std::string> out_;

  [[noreturn]] void fail(const std::string& why) const {
    throw InputError(what_ + ": malformed JSON at character " + std::to_string(i_) + " (" + why +
                     ")");
  }
  char peek() const { return i_ < s_.size() ? s_[i_] : '\0'; }
  void ws() {
    while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_;
  }
  void expect(char c) {
    ws();
    if (peek() != c) fail(std::string("expected '") + c + "'");
    ++i_;
  }
  std::string string_value() {
    expect('"');
    std::string v;
    while (true) {
      if (i_ >= s_.size()) fail("unterminated string");
      const char c = s_[i_++];
      if (c == '"') break;
      if (c == '\\') {
        if (i_ >= s_.size()) fail("unterminated escape");
        const char e = s_[i_++];
        switch (e) {
          case 'n':
            v += '\n';
            break;
          case 't':
            v += '\t';
            break;
          case 'r':
            v += '\r';
            break;
          case 'b':
            v += '\b';
            break;
          case 'f':
            v += '\f';
            break;
          case 'u':
            if (i_ + 4 > s_.size()) fail("short \\u escape");
            v += "\\u" + s_.substr(i_, 4);  // kept as written: config values are ASCII
            i_ += 4;
            break;
          default:
            v += e;
        }
      } else {
        v += c;
      }
    }
    return v;
  }
  // Skips any value and returns its text (for arrays).
  std::string raw_value() {
    ws();
    const size_t start = i_;
    const char c = peek();
    if (c == '"') {
      string_value();
    } else if (c == '[' || c == '{') {
      int depth = 0;
      bool in_str = false;
      for (; i_ < s_.size(); ++i_) {
        const char d = s_[i_];
        if (in_str) {
          if (d == '\\')
            ++i_;
          else if (d == '"')
            in_str = false;
        } else if (d == '"') {
          in_str = true;
        } else if (d == '[' || d == '{') {
          ++depth;
        } else if (d == ']' || d == '}') {
          if (--depth == 0) {
            ++i_;
            break;
          }
        }
      }
      if (depth != 0) fail("unbalanced brackets");
    } else {
      while (i_ < s_.size() && !std::strchr(",}] \t\r\n", s_[i_])) ++i_;
      if (i_ == start) fail("expected a value");
    }
    return s_.substr(start, i_ - start);
  }
  void object(const std::string& prefix) {
    expect('{');
    ws();
    if (peek() == '}') {
      ++i_;
      return;
    }
    while (true) {
      const std::string key = prefix + string_value();
      expect(':');
      ws();
      if (peek() == '{')
        object(key + ".");
      else if (peek() == '"')
        out_[key] = string_value();
      else
        out_[key] = raw_value();
      ws();
      if (peek() == ',') {
        ++i_;
        continue;
      }
      expect('}');
      return;
    }
  }
};

// ---------------------------------------------------------------- columns

enum class Kind { Count, Ratio, Pct, Bytes, Seconds, GBps };

struct Column {
  const char* key;     // JSON / CSV name (SI units: bytes, seconds)
  const char* header;  // text / markdown header (display units)
  Kind kind;
  bool measured_only;  // shown in text / md only when some row has measured times
  double (*get)(const RouterSummary&);
};

double total_bytes(const RouterSummary& s) {
  return s.mean_dispatch_bytes_local + s.mean_dispatch_bytes_intra + s.mean_dispatch_bytes_inter;
}

const Column kColumns[] = {
    {"records", "records", Kind::Count, false,
     +[](const RouterSummary& s) { return static_cast<double>(s.records); }},
    {"mean_active_experts", "act/tok", Kind::Ratio, false,
     +[](const RouterSummary& s) { return s.mean_active_experts; }},
    {"mean_expert_imbalance", "imbal", Kind::Ratio, false,
     +[](const RouterSummary& s) { return s.mean_expert_imbalance; }},
    {"mean_expert_cv", "cv", Kind::Ratio, false,
     +[](const RouterSummary& s) { return s.mean_expert_cv; }},
    {"mean_rank_imbalance", "rank_imbal", Kind::Ratio, false,
     +[](const RouterSummary& s) { return s.mean_rank_imbalance; }},
    {"max_capacity_factor_required", "cf_req", Kind::Ratio, false,
     +[](const RouterSummary& s) { return s.max_capacity_factor_required; }},
    {"max_tokens_per_expert", "max_tok/e", Kind::Count, false,
     +[](const RouterSummary& s) { return static_cast<double>(s.max_tokens_per_expert); }},
    {"drop_rate", "drop%", Kind::Pct, false, +[](const RouterSummary& s) { return s.drop_rate; }},
    {"mean_dispatch_bytes", "bytes_MB", Kind::Bytes, false,
     +[](const RouterSummary& s) { return total_bytes(s); }},
    {"mean_dispatch_bytes_local", "local_MB", Kind::Bytes, false,
     +[](const RouterSummary& s) { return s.mean_dispatch_bytes_local; }},
    {"mean_dispatch_bytes_intra", "intra_MB", Kind::Bytes, false,
     +[](const RouterSummary& s) { return s.mean_dispatch_bytes_intra; }},
    {"mean_dispatch_bytes_inter", "inter_MB", Kind::Bytes, false,
     +[](const RouterSummary& s) { return s.mean_dispatch_bytes_inter; }},
    {"mean_model_a2a_s", "a2a_ms", Kind::Seconds, false,
     +[](const RouterSummary& s) { return s.mean_model_a2a_s; }},
    {"mean_busbw_GBps", "busbw_GBps", Kind::GBps, false,
     +[](const RouterSummary& s) { return s.mean_busbw_GBps; }},
    {"mean_measured_a2a_s", "meas_ms", Kind::Seconds, true,
     +[](const RouterSummary& s) { return s.measured ? s.mean_measured_a2a_s : NAN; }},
    {"median_model_error", "model_err%", Kind::Pct, true,
     +[](const RouterSummary& s) { return s.measured ? s.median_model_error : NAN; }},
    {"mean_router_s", "router_ms", Kind::Seconds, false,
     +[](const RouterSummary& s) { return s.mean_router_s; }},
    // Issue 17 (after the older columns, whose positions scripts may rely on).
    {"mean_expert_balancedness", "bal_e", Kind::Ratio, false,
     +[](const RouterSummary& s) { return s.mean_expert_balancedness; }},
    {"mean_gpu_balancedness", "bal_gpu", Kind::Ratio, false,
     +[](const RouterSummary& s) { return s.mean_gpu_balancedness; }},
    {"min_gpu_balancedness", "bal_gpu_min", Kind::Ratio, false,
     +[](const RouterSummary& s) { return s.min_gpu_balancedness; }},
    {"mean_ranks_per_token", "ranks/tok", Kind::Ratio, false,
     +[](const RouterSummary& s) { return s.mean_ranks_per_token; }},
    {"mean_nodes_per_token", "nodes/tok", Kind::Ratio, false,
     +[](const RouterSummary& s) { return s.mean_nodes_per_token; }},
    {"mean_nonself_algbw_GBps", "bw_GBps", Kind::GBps, false,
     +[](const RouterSummary& s) { return s.mean_nonself_algbw_GBps; }},
    {"mean_padding_bytes", "pad_MB", Kind::Bytes, false,
     +[](const RouterSummary& s) { return s.mean_padding_bytes; }},
    {"balancedness_gain_per_GB", "bal_gain/GB", Kind::Ratio, false,
     +[](const RouterSummary& s) { return s.balancedness_gain_per_GB(); }},
};

// Delta columns: value - reference, and value / reference - 1.
const Column kDeltas[] = {
    {"bytes", "Δbytes", Kind::Bytes, false, +[](const RouterSummary& s) { return total_bytes(s); }},
    {"inter_bytes", "Δinter", Kind::Bytes, false,
     +[](const RouterSummary& s) { return s.mean_dispatch_bytes_inter; }},
    {"max_tokens_per_expert", "Δmax_tok/e", Kind::Count, false,
     +[](const RouterSummary& s) { return static_cast<double>(s.max_tokens_per_expert); }},
    {"model_a2a_s", "Δa2a", Kind::Seconds, false,
     +[](const RouterSummary& s) { return s.mean_model_a2a_s; }},
    {"measured_a2a_s", "Δmeas", Kind::Seconds, true,
     +[](const RouterSummary& s) { return s.measured ? s.mean_measured_a2a_s : NAN; }},
};

// A column's value; NaN (null, n/a) for every column but `records` when there is no record
// (a partial file with no completed step).
double value(const Column& c, const RouterSummary& s) {
  if (s.records == 0 && std::string(c.key) != "records") return NAN;
  return c.get(s);
}

double relative(double value, double ref) {
  if (std::isnan(value) || std::isnan(ref)) return NAN;
  if (ref == 0) return value == 0 ? 0.0 : NAN;
  return value / ref - 1.0;
}

std::string printf_str(const char* f, double v) {
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

// Display value for text / markdown.
std::string display(Kind kind, double v) {
  if (std::isnan(v)) return "n/a";
  switch (kind) {
    case Kind::Count:
      return printf_str("%.0f", v);
    case Kind::Ratio:
      return printf_str("%.3f", v);
    case Kind::Pct:
      return printf_str("%.2f", 100.0 * v);
    case Kind::Bytes:
      return printf_str("%.3f", v / 1e6);
    case Kind::Seconds:
      return printf_str("%.4f", v * 1e3);
    case Kind::GBps:
      return printf_str("%.1f", v);
  }
  return "?";
}
std::string display_rel(double rel) {
  return std::isnan(rel) ? "n/a" : printf_str("%+.1f%%", 100.0 * rel);
}

// Full-precision value for CSV / JSON ("" for NaN; JSON writes null).
std::string exact(double v) {
  if (std::isnan(v)) return "";
  if (v == std::floor(v) && std::abs(v) < 9e15) return printf_str("%.0f", v);
  return printf_str("%.17g", v);
}

std::string json_escape(const std::string& s) {
  std::string o;
  for (const char c : s) {
    switch (c) {
      case '"':
        o += "\\\"";
        break;
      case '\\':
        o += "\\\\";
        break;
      case '\n':
        o += "\\n";
        break;
      case '\t':
        o += "\\t";
        break;
      case '\r':
        o += "\\r";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20)
          o += printf_str("\\u%04x", static_cast<unsigned char>(c));
        else
          o += c;
    }
  }
  return "\"" + o + "\"";
}
std::string json_number(double v) {
  return std::isnan(v) || std::isinf(v) ? "null" : exact(v);
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string o = "\"";
  for (const char c : s) o += c == '"' ? std::string("\"\"") : std::string(1, c);
  return o + "\"";
}

// ---------------------------------------------------------------- rows

struct Row {
  std::string run;  // file label (compare) or ""
  std::string router;
  std::string tail;   // "tail completed (MODEL)" when the router read completed logits, else ""
  std::string scope;  // all | layer | step
  int64_t step = -1, layer = -1;
  RouterSummary s;
  bool has_ref = false;
  RouterSummary ref;  // baseline router (same file) or the first file's same router (compare)
};

std::vector<StepLayerMetrics> subset(const ResultsFile& f, const std::string& router,
                                     const std::string& scope, int64_t index) {
  const auto& recs = f.records.at(router);
  if (scope == "all") return recs;
  std::vector<StepLayerMetrics> out;
  for (size_t i = 0; i < recs.size(); ++i) {
    const int64_t step = static_cast<int64_t>(i) / f.layers,
                  layer = static_cast<int64_t>(i) % f.layers;
    if ((scope == "layer" && layer == index) || (scope == "step" && step == index))
      out.push_back(recs[i]);
  }
  return out;
}

std::string label_of(const ResultsFile& f, const std::vector<ResultsFile>& all) {
  const std::string base = std::filesystem::path(f.path).filename().string();
  int same = 0;
  for (const auto& g : all) same += std::filesystem::path(g.path).filename().string() == base;
  return same > 1 ? f.path : base;
}

// Routers in first-seen order over the files.
std::vector<std::string> router_union(const std::vector<ResultsFile>& files) {
  std::vector<std::string> out;
  for (const auto& f : files)
    for (const auto& r : f.routers)
      if (std::find(out.begin(), out.end(), r) == out.end()) out.push_back(r);
  return out;
}

bool has_router(const ResultsFile& f, const std::string& r) {
  return f.records.count(r) > 0;
}

std::vector<Row> build_rows(const std::vector<ResultsFile>& files, const ReportOptions& o,
                            const std::string& scope) {
  std::vector<Row> rows;
  const auto routers = router_union(files);
  // Scope indices: one "all" row, or every layer / every completed step (of the largest file).
  int64_t count = 1;
  if (scope == "layer")
    for (const auto& f : files) count = std::max<int64_t>(count, f.layers);
  if (scope == "step")
    for (const auto& f : files) count = std::max<int64_t>(count, f.steps_done);
  for (const auto& router : routers) {
    for (int64_t idx = 0; idx < count; ++idx) {
      const ResultsFile* ref_file = nullptr;
      for (const auto& f : files) {
        if (!has_router(f, router)) continue;
        if ((scope == "layer" && idx >= f.layers) || (scope == "step" && idx >= f.steps_done))
          continue;
        Row row;
        row.run = o.compare ? label_of(f, files) : "";
        row.router = router;
        row.tail = f.tail_mark(router);
        row.scope = scope;
        if (scope == "layer") row.layer = idx;
        if (scope == "step") row.step = idx;
        row.s = summarize(router, subset(f, router, scope, idx));
        if (o.compare) {
          if (!ref_file) ref_file = &f;
          row.has_ref = true;
          row.ref = summarize(router, subset(*ref_file, router, scope, idx));
        } else if (!o.baseline.empty()) {
          row.has_ref = true;
          row.ref = summarize(o.baseline, subset(f, o.baseline, scope, idx));
        }
        rows.push_back(std::move(row));
      }
    }
  }
  return rows;
}

std::vector<std::string> scopes(const ReportOptions& o) {
  std::vector<std::string> v{"all"};
  if (o.per_layer) v.push_back("layer");
  if (o.per_step) v.push_back("step");
  return v;
}

bool any_measured(const std::vector<ResultsFile>& files) {
  for (const auto& f : files)
    for (const auto& [router, recs] : f.records)
      for (const auto& m : recs)
        if (!std::isnan(m.measured_dispatch_s)) return true;
  return false;
}

// Header and cells of one human-readable table (text or markdown).
std::vector<std::vector<std::string>> human_table(const std::vector<Row>& rows, bool compare,
                                                  bool measured) {
  std::vector<std::vector<std::string>> t;
  const bool deltas = !rows.empty() && rows.front().has_ref;
  const std::string scope = rows.empty() ? "all" : rows.front().scope;
  std::vector<std::string> head;
  if (compare) head.push_back("run");
  head.push_back("router");
  if (scope == "step") head.push_back("step");
  if (scope == "layer") head.push_back("layer");
  for (const auto& c : kColumns)
    if (measured || !c.measured_only) head.push_back(c.header);
  if (deltas)
    for (const auto& d : kDeltas)
      if (measured || !d.measured_only) head.push_back(d.header);
  t.push_back(head);
  for (const auto& r : rows) {
    std::vector<std::string> line;
    if (compare) line.push_back(r.run);
    line.push_back(r.router + (r.tail.empty() ? "" : " [" + r.tail + "]"));
    if (scope == "step") line.push_back(std::to_string(r.step));
    if (scope == "layer") line.push_back(std::to_string(r.layer));
    for (const auto& c : kColumns)
      if (measured || !c.measured_only) line.push_back(display(c.kind, value(c, r.s)));
    if (deltas)
      for (const auto& d : kDeltas)
        if (measured || !d.measured_only)
          line.push_back(display_rel(relative(value(d, r.s), value(d, r.ref))));
    t.push_back(line);
  }
  return t;
}

// Display width: UTF-8 code points (the headers hold "Δ").
size_t width(const std::string& s) {
  size_t n = 0;
  for (const char c : s) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
  return n;
}

std::string render_text(const std::vector<std::vector<std::string>>& t) {
  std::vector<size_t> w(t.front().size(), 0);
  for (const auto& line : t)
    for (size_t i = 0; i < line.size(); ++i) w[i] = std::max(w[i], width(line[i]));
  std::string out;
  for (const auto& line : t) {
    for (size_t i = 0; i < line.size(); ++i) {
      const std::string pad(w[i] - width(line[i]) + (i ? 2 : 0), ' ');
      out += i == 0 ? line[i] + pad : pad + line[i];  // first column left, numbers right
    }
    out += "\n";
  }
  return out;
}

std::string render_md(const std::vector<std::vector<std::string>>& t) {
  std::string out;
  for (size_t r = 0; r < t.size(); ++r) {
    out += "|";
    for (const auto& c : t[r]) out += " " + c + " |";
    out += "\n";
    if (r == 0) {
      out += "|";
      for (size_t i = 0; i < t[r].size(); ++i)
        out += t[0][i] == "run" || t[0][i] == "router" ? "---|" : "---:|";
      out += "\n";
    }
  }
  return out;
}

constexpr const char* kLegend =
    "act/tok: experts per token after capacity; imbal, cv: max/mean and std/mean of expert load; "
    "rank_imbal: max/mean "
    "of tokens received per rank; cf_req: capacity factor needed for no drop (max); max_tok/e: "
    "most tokens any expert "
    "processed (max); *_MB: dispatch bytes per layer (1e6 B) by link class; a2a_ms: modelled "
    "dispatch+combine per layer; "
    "bal_e, bal_gpu: balancedness mean/max of expert loads and of GPU loads after placement "
    "(SGLang/vLLM; bal_gpu_min: the worst step and layer); ranks/tok, nodes/tok: distinct "
    "destinations per token; bw_GBps: modelled dispatch bytes that leave their rank / R / time "
    "(self-traffic excluded); busbw_GBps: nccl-tests bus bandwidth (self bytes included, x "
    "(R-1)/R); "
    "pad_MB: empty capacity slots if buffers are padded to C; bal_gain/GB: GPU balancedness gained "
    "by re-placements per GB of expert weights moved; meas_ms: measured dispatch+combine per "
    "layer; "
    "model_err%: median |model - "
    "measured| / measured; Δ columns: relative to the reference row (n/a where the reference is 0 "
    "or unmeasured).";

std::string scope_title(const std::string& scope) {
  if (scope == "layer") return "Per layer (mean over steps)";
  if (scope == "step") return "Per step (mean over layers)";
  return "Summary (all steps and layers)";
}

// ---------------------------------------------------------------- compare: configuration
// differences

std::vector<std::map<std::string, std::string>> configs_of(const std::vector<ResultsFile>& files) {
  std::vector<std::map<std::string, std::string>> v;
  for (const auto& f : files) {
    auto flat = flatten_json(f.config_json, f.path + ": root attribute 'config'");
    flat.erase("routers");  // runs are matched by router; the router lists may differ
    v.push_back(std::move(flat));
  }
  return v;
}

struct CompareVerdict {
  std::vector<ConfigDifference> diffs;
  std::set<std::string> compared;  // dimensions
  bool inferred = false;           // not named with --vary
  std::vector<ConfigDifference> confounders;
};

CompareVerdict compare_verdict(const std::vector<ResultsFile>& files, const ReportOptions& o) {
  CompareVerdict v;
  v.diffs = config_differences(configs_of(files));
  if (!o.vary.empty()) {
    std::istringstream is(o.vary);
    std::string d;
    while (std::getline(is, d, ',')) v.compared.insert(d);
  } else if (!v.diffs.empty()) {
    // Inferred: the differing dimension a comparison is most likely about (cluster first, workload
    // last).
    std::set<std::string> dims;
    for (const auto& d : v.diffs) dims.insert(d.dimension);
    for (const char* d :
         {"cluster", "placement", "dedup", "capacity", "routers", "shape", "workload"})
      if (v.compared.empty() && dims.count(d)) v.compared.insert(d);
    if (v.compared.empty()) v.compared.insert(*dims.begin());
    v.inferred = true;
  }
  for (const auto& d : v.diffs)
    if (!v.compared.count(d.dimension) && !v.compared.count(d.key)) v.confounders.push_back(d);
  return v;
}

std::string join(const std::vector<std::string>& v, const std::string& sep) {
  std::string o;
  for (size_t i = 0; i < v.size(); ++i) o += (i ? sep : "") + v[i];
  return o;
}

std::vector<std::string> compare_notes(const std::vector<ResultsFile>& files,
                                       const CompareVerdict& v) {
  std::vector<std::string> notes;
  std::vector<std::string> labels;
  for (const auto& f : files) labels.push_back(label_of(f, files));
  if (v.diffs.empty())
    notes.push_back("configurations are identical (apart from the router lists)");
  for (const auto& d : v.diffs) {
    const bool confound = std::find_if(v.confounders.begin(), v.confounders.end(),
                                       [&](const ConfigDifference& c) { return c.key == d.key; }) !=
                          v.confounders.end();
    notes.push_back(std::string(confound ? "FLAG: " : "") + d.key + " [" + d.dimension +
                    "]: " + join(d.values, " | ") +
                    (confound ? " (differs beyond the compared dimension)" : " (compared)"));
  }
  for (const auto& r : router_union(files)) {
    std::vector<std::string> missing;
    for (size_t i = 0; i < files.size(); ++i)
      if (!has_router(files[i], r)) missing.push_back(labels[i]);
    if (!missing.empty()) notes.push_back("router " + r + " is not in " + join(missing, ", "));
  }
  for (size_t i = 0; i < files.size(); ++i)
    if (files[i].status != "complete")
      notes.push_back("WARNING: " + labels[i] +
                      " is partial: " + std::to_string(files[i].steps_done) + " of " +
                      std::to_string(files[i].steps_planned) + " steps completed (reported)");
  return notes;
}

// ---------------------------------------------------------------- formats

std::string partial_line(const ResultsFile& f) {
  return "WARNING: partial file (status=" + f.status + "): " + std::to_string(f.steps_done) +
         " of " + std::to_string(f.steps_planned) +
         " steps completed; the report covers the completed steps only";
}

std::string format_text(const std::vector<ResultsFile>& files, const ReportOptions& o) {
  std::ostringstream os;
  const bool measured = any_measured(files);
  if (!o.compare) {
    const auto& f = files.front();
    os << format_report(f);  // the console table, as before
    if (!o.baseline.empty() || o.per_layer || o.per_step) {
      for (const auto& scope : scopes(o)) {
        if (scope == "all" && o.baseline.empty()) continue;
        os << "\n"
           << scope_title(scope) << (o.baseline.empty() ? "" : ", deltas against " + o.baseline)
           << ":\n";
        os << render_text(human_table(build_rows(files, o, scope), false, measured));
      }
    }
  } else {
    os << "moebench comparison of " << files.size() << " runs (deltas against the first run):\n";
    for (const auto& f : files)
      os << "  " << label_of(f, files) << ": " << f.status << ", " << f.steps_done
         << " steps, EP size " << f.ep_size << ", " << f.experts << " experts, " << f.layers
         << " layers (" << f.path << ")\n";
    const auto v = compare_verdict(files, o);
    os << "compared dimension: "
       << (v.compared.empty() ? std::string("none")
                              : join({v.compared.begin(), v.compared.end()}, ", "))
       << (v.inferred ? " (inferred from the differences; name it with --vary)" : "") << "\n";
    for (const auto& n : compare_notes(files, v)) os << "  " << n << "\n";
    if (!v.confounders.empty())
      os << "WARNING: the runs differ in " << v.confounders.size()
         << " setting(s) beyond the compared dimension; their differences are not due to it "
            "alone\n";
    for (const auto& scope : scopes(o)) {
      os << "\n" << scope_title(scope) << ":\n";
      os << render_text(human_table(build_rows(files, o, scope), true, measured));
    }
  }
  if (o.compare || !o.baseline.empty() || o.per_layer || o.per_step) os << kLegend << "\n";
  if (o.claims) {
    for (const auto& f : files) os << format_claims(f);
    os << format_tail_sensitivity(files);
  }
  return os.str();
}

std::string format_md(const std::vector<ResultsFile>& files, const ReportOptions& o) {
  std::ostringstream os;
  const bool measured = any_measured(files);
  if (!o.compare) {
    const auto& f = files.front();
    os << "# moebench report: " << label_of(f, files) << "\n\n";
    if (f.status != "complete") os << "> **" << partial_line(f) << "**\n\n";
    os << "| | |\n|---|---|\n";
    os << "| file | `" << f.path << "` |\n";
    os << "| status | " << f.status << ", " << f.steps_done << " of " << f.steps_planned
       << " steps |\n";
    os << "| moebench | " << f.moebench_version << " (git " << f.git_sha << "), format v"
       << f.format_version << " |\n";
    os << "| EP ranks | " << f.ep_size << " on " << f.world_size << " processes |\n";
    os << "| experts, layers | " << f.experts << ", " << f.layers << " |\n";
    os << "| command | `" << f.command_line << "` |\n\n";
    for (const auto& n : router_notes(f)) os << "- " << n << "\n";
    os << "\n";
  } else {
    os << "# moebench comparison\n\n";
    os << "| run | status | steps | EP ranks | experts | layers | file "
          "|\n|---|---|---:|---:|---:|---:|---|\n";
    for (const auto& f : files)
      os << "| " << label_of(f, files) << " | " << f.status << " | " << f.steps_done << " | "
         << f.ep_size << " | " << f.experts << " | " << f.layers << " | `" << f.path << "` |\n";
    const auto v = compare_verdict(files, o);
    os << "\nCompared dimension: **"
       << (v.compared.empty() ? std::string("none")
                              : join({v.compared.begin(), v.compared.end()}, ", "))
       << "**" << (v.inferred ? " (inferred; name it with `--vary`)" : "") << "; deltas "
       << "against the first run.\n\n";
    if (!v.confounders.empty())
      os << "> **WARNING**: the runs differ in " << v.confounders.size()
         << " setting(s) beyond the compared dimension; their differences are not due to it "
            "alone.\n\n";
    for (const auto& n : compare_notes(files, v)) os << "- " << n << "\n";
    os << "\n";
  }
  for (const auto& scope : scopes(o)) {
    os << "## " << scope_title(scope)
       << (!o.compare && !o.baseline.empty() ? ", deltas against " + o.baseline : std::string())
       << "\n\n";
    os << render_md(human_table(build_rows(files, o, scope), o.compare, measured)) << "\n";
  }
  for (const auto& f : files)
    for (const auto& g : offline_placement_gaps(f))
      os << "- offline placement (" << label_of(f, files) << ", " << g.router << "): balancedness "
         << printf_str("%.4f", g.train) << " on its training loads, " << printf_str("%.4f", g.test)
         << " on this run's loads, gap " << printf_str("%+.4f", g.gap) << " (train - test); "
         << printf_str("%.4f", g.served) << " served\n\n";
  os << kLegend << "\n";
  if (o.claims) {
    for (const auto& f : files) os << "\n## Claims\n\n```\n" << format_claims(f) << "```\n";
    const std::string sensitivity = format_tail_sensitivity(files);
    if (!sensitivity.empty()) os << "\n## Tail sensitivity\n\n```" << sensitivity << "```\n";
  }
  return os.str();
}

std::string format_csv(const std::vector<ResultsFile>& files, const ReportOptions& o) {
  std::ostringstream os;
  const bool deltas = o.compare || !o.baseline.empty();
  os << "run,router,scope,step,layer";
  for (const auto& c : kColumns) os << "," << c.key;
  if (deltas)
    for (const auto& d : kDeltas) os << ",delta_" << d.key << ",delta_" << d.key << "_rel";
  os << "\n";
  for (const auto& scope : scopes(o)) {
    for (const auto& r : build_rows(files, o, scope)) {
      os << csv_field(o.compare ? r.run : label_of(files.front(), files)) << ","
         << csv_field(r.router) << "," << scope << ","
         << (r.step >= 0 ? std::to_string(r.step) : "") << ","
         << (r.layer >= 0 ? std::to_string(r.layer) : "");
      for (const auto& c : kColumns) os << "," << exact(value(c, r.s));
      if (deltas)
        for (const auto& d : kDeltas) {
          const double v = value(d, r.s), ref = value(d, r.ref);
          os << "," << exact(v - ref) << "," << exact(relative(v, ref));
        }
      os << "\n";
    }
  }
  return os.str();
}

std::string json_file_header(const ResultsFile& f, const std::string& label) {
  std::ostringstream os;
  os << "{\"run\": " << json_escape(label) << ", \"path\": " << json_escape(f.path)
     << ", \"format\": \"moebench-results\""
     << ", \"format_version\": " << f.format_version << ", \"status\": " << json_escape(f.status)
     << ", \"steps_done\": " << f.steps_done << ", \"steps_planned\": " << f.steps_planned
     << ", \"layers\": " << f.layers << ", \"experts\": " << f.experts
     << ", \"ep_size\": " << f.ep_size << ", \"world_size\": " << f.world_size
     << ", \"hosts\": " << json_escape(f.hosts)
     << ", \"moebench_version\": " << json_escape(f.moebench_version)
     << ", \"git_sha\": " << json_escape(f.git_sha)
     << ", \"command_line\": " << json_escape(f.command_line);
  // Both attributes are JSON written by moebench; embedded as objects after a syntax check.
  flatten_json(f.config_json, f.path + ": root attribute 'config'");
  flatten_json(f.topology_json, f.path + ": root attribute 'topology'");
  os << ", \"warmup_steps_excluded\": " << f.warmup_steps_excluded << ", \"notes\": [";
  const auto notes = router_notes(f);
  for (size_t i = 0; i < notes.size(); ++i) os << (i ? ", " : "") << json_escape(notes[i]);
  os << "]";
  os << ", \"config\": " << f.config_json << ", \"topology\": " << f.topology_json << "}";
  return os.str();
}

std::string format_json(const std::vector<ResultsFile>& files, const ReportOptions& o) {
  std::ostringstream os;
  os << "{\n  \"report\": \"moebench-report\",\n  \"files\": [\n";
  for (size_t i = 0; i < files.size(); ++i)
    os << "    " << json_file_header(files[i], label_of(files[i], files))
       << (i + 1 < files.size() ? ",\n" : "\n");
  os << "  ],\n  \"baseline\": " << (o.baseline.empty() ? "null" : json_escape(o.baseline))
     << ",\n";
  if (o.compare) {
    const auto v = compare_verdict(files, o);
    os << "  \"compare\": {\"reference\": " << json_escape(label_of(files.front(), files))
       << ", \"compared_dimensions\": [";
    size_t n = 0;
    for (const auto& d : v.compared) os << (n++ ? ", " : "") << json_escape(d);
    os << "], \"inferred\": " << (v.inferred ? "true" : "false") << ", \"differences\": [";
    for (size_t i = 0; i < v.diffs.size(); ++i) {
      const auto& d = v.diffs[i];
      const bool confound =
          std::find_if(v.confounders.begin(), v.confounders.end(), [&](const ConfigDifference& c) {
            return c.key == d.key;
          }) != v.confounders.end();
      os << (i ? ", " : "") << "{\"key\": " << json_escape(d.key)
         << ", \"dimension\": " << json_escape(d.dimension)
         << ", \"flagged\": " << (confound ? "true" : "false") << ", \"values\": [";
      for (size_t j = 0; j < d.values.size(); ++j)
        os << (j ? ", " : "") << json_escape(d.values[j]);
      os << "]}";
    }
    os << "], \"notes\": [";
    const auto notes = compare_notes(files, v);
    for (size_t i = 0; i < notes.size(); ++i) os << (i ? ", " : "") << json_escape(notes[i]);
    os << "]},\n";
  }
  const std::map<std::string, std::string> section{
      {"all", "summary"}, {"layer", "per_layer"}, {"step", "per_step"}};
  std::vector<std::string> gaps;  // offline placements: train/test balancedness
  for (const auto& f : files)
    for (const auto& g : offline_placement_gaps(f))
      gaps.push_back("{\"run\": " + json_escape(label_of(f, files)) + ", \"router\": " +
                     json_escape(g.router) + ", \"train_balancedness\": " + json_number(g.train) +
                     ", \"test_balancedness\": " + json_number(g.test) +
                     ", \"gap\": " + json_number(g.gap) +
                     ", \"served_gpu_balancedness\": " + json_number(g.served) + "}");
  const auto sc = scopes(o);
  for (size_t si = 0; si < sc.size(); ++si) {
    const auto rows = build_rows(files, o, sc[si]);
    os << "  \"" << section.at(sc[si]) << "\": [\n";
    for (size_t i = 0; i < rows.size(); ++i) {
      const auto& r = rows[i];
      os << "    {\"run\": " << json_escape(o.compare ? r.run : label_of(files.front(), files))
         << ", \"router\": " << json_escape(r.router);
      if (!r.tail.empty()) os << ", \"tail\": " << json_escape(r.tail);
      if (r.step >= 0) os << ", \"step\": " << r.step;
      if (r.layer >= 0) os << ", \"layer\": " << r.layer;
      for (const auto& c : kColumns) os << ", \"" << c.key << "\": " << json_number(value(c, r.s));
      if (r.has_ref) {
        os << ", \"delta\": {";
        size_t n = 0;
        for (const auto& d : kDeltas) {
          const double v = value(d, r.s), ref = value(d, r.ref);
          os << (n++ ? ", " : "") << "\"" << d.key << "\": {\"abs\": " << json_number(v - ref)
             << ", \"rel\": " << json_number(relative(v, ref)) << "}";
        }
        os << "}";
      }
      os << "}" << (i + 1 < rows.size() ? ",\n" : "\n");
    }
    os << "  ]" << (si + 1 < sc.size() || o.claims || !gaps.empty() ? ",\n" : "\n");
  }
  if (!gaps.empty())
    os << "  \"offline_placement\": [" << join(gaps, ", ") << "]" << (o.claims ? ",\n" : "\n");
  if (o.claims) {
    os << "  \"claims\": [";
    for (size_t i = 0; i < files.size(); ++i)
      os << (i ? ", " : "") << "{\"run\": " << json_escape(label_of(files[i], files))
         << ", \"text\": " << json_escape(format_claims(files[i])) << "}";
    os << "]\n";
  }
  os << "}\n";
  return os.str();
}

}  // namespace

std::map<std::string, std::string> flatten_json(const std::string& json, const std::string& what) {
  return FlatJson(json, what).parse();
}

std::string config_dimension(const std::string& key) {
  static const std::map<std::string, std::string> dims = {
      {"nodes", "cluster"},
      {"ranks_per_node", "cluster"},
      {"ep_size", "cluster"},
      {"topology", "cluster"},
      {"intra_bw_GBps", "cluster"},
      {"inter_bw_Gbps", "cluster"},
      {"intra_lat_us", "cluster"},
      {"inter_lat_us", "cluster"},
      {"backend", "cluster"},
      {"a2a_algo", "cluster"},
      {"warmup", "cluster"},
      {"iters", "cluster"},
      {"route_on", "cluster"},
      {"placement", "placement"},
      {"workload", "workload"},
      {"seed", "workload"},
      {"seq_len", "workload"},
      {"trace", "workload"},
      {"capacity_factor", "capacity"},
      {"drop_policy", "capacity"},
      {"capacity_scope", "capacity"},
      {"dedup", "dedup"},
      {"experts", "shape"},
      {"top_k", "shape"},
      {"layers", "shape"},
      {"steps", "shape"},
      {"tokens_per_rank", "shape"},
      {"hidden", "shape"},
      {"dtype", "shape"},
      {"routers", "routers"},
  };
  const auto head = key.substr(0, key.find('.'));
  if (head == "workload_args") return "workload";
  if (head == "router_args") return "routers";
  if (head == "placement_args") return "placement";
  const auto it = dims.find(key);
  return it == dims.end() ? key : it->second;
}

std::vector<ConfigDifference> config_differences(
    const std::vector<std::map<std::string, std::string>>& configs) {
  std::set<std::string> keys;
  for (const auto& c : configs)
    for (const auto& [k, v] : c) keys.insert(k);
  std::vector<ConfigDifference> out;
  for (const auto& k : keys) {
    ConfigDifference d{k, config_dimension(k), {}};
    for (const auto& c : configs) {
      const auto it = c.find(k);
      d.values.push_back(it == c.end() ? "(absent)" : it->second);
    }
    if (std::adjacent_find(d.values.begin(), d.values.end(), std::not_equal_to<>()) !=
        d.values.end())
      out.push_back(std::move(d));
  }
  return out;
}

std::string format_results_report(const std::vector<ResultsFile>& files, const ReportOptions& o) {
  if (o.format == "md") return format_md(files, o);
  if (o.format == "csv") return format_csv(files, o);
  if (o.format == "json") return format_json(files, o);
  return format_text(files, o);
}

int report_command(int argc, const char* const* argv, const Comm& world) {
  std::vector<std::string> paths;
  ReportOptions o;
  auto value = [&](int& i, const std::string& name) -> std::string {
    if (i + 1 >= argc) throw InputError("report: " + name + " needs a value");
    return argv[++i];
  };
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      if (world.root()) std::printf("%s", kReportUsage);
      return 0;
    }
    if (a == "--claims")
      o.claims = true;
    else if (a == "--per-layer")
      o.per_layer = true;
    else if (a == "--per-step")
      o.per_step = true;
    else if (a == "--compare")
      o.compare = true;
    else if (a == "--format")
      o.format = value(i, a);
    else if (a == "--baseline")
      o.baseline = value(i, a);
    else if (a == "--vary")
      o.vary = value(i, a);
    else if (a == "--warmup-steps") {
      const std::string v = value(i, a);
      char* end = nullptr;
      const long long n = std::strtoll(v.c_str(), &end, 10);
      if (v.empty() || *end != '\0' || n < 0)
        throw InputError("report: --warmup-steps '" + v + "' is not a whole number >= 0");
      o.warmup_steps = n;
    } else if (a.rfind("--", 0) == 0)
      throw InputError("report: unknown option '" + a +
                       "' (known: --format, --baseline, --per-layer, --per-step, --compare, "
                       "--vary, --claims, --warmup-steps, --help)");
    else
      paths.push_back(a);
  }
  if (o.format != "text" && o.format != "md" && o.format != "csv" && o.format != "json")
    throw InputError("report: --format '" + o.format + "' is not one of text, md, csv, json");
  if (paths.empty())
    throw InputError("report: expected a results file (moebench report FILE [options]; --help)");
  if (paths.size() > 1 && !o.compare)
    throw InputError("report: " + std::to_string(paths.size()) +
                     " files given; add --compare to put them side by side");
  if (o.compare && paths.size() < 2)
    throw InputError("report: --compare needs at least two results files");
  if (o.compare && !o.baseline.empty())
    throw InputError(
        "report: --baseline does not combine with --compare (a comparison's deltas are against the "
        "first file)");
  if (!o.vary.empty() && !o.compare) throw InputError("report: --vary needs --compare");
  if (o.claims && o.format == "csv")
    throw InputError("report: --claims is available in the text, md and json formats, not csv");
  if (!world.root()) return 0;
  std::vector<ResultsFile> files;
  for (const auto& p : paths) {
    files.push_back(read_results(p));
    drop_warmup_steps(files.back(), o.warmup_steps);
  }
  if (!o.baseline.empty())
    for (const auto& f : files)
      if (!has_router(f, o.baseline))
        throw InputError("report: --baseline '" + o.baseline + "' is not a router of " + f.path +
                         " (routers: " + join(f.routers, ", ") + ")");
  if (!o.vary.empty()) {
    std::set<std::string> known{"cluster", "placement", "workload", "capacity",
                                "dedup",   "shape",     "routers"};
    for (const auto& c : configs_of(files))
      for (const auto& [k, v] : c) known.insert(k);
    std::istringstream is(o.vary);
    std::string d;
    while (std::getline(is, d, ','))
      if (!known.count(d))
        throw InputError("report: --vary '" + d +
                         "' is neither a dimension (cluster, placement, workload, capacity, dedup, "
                         "shape, routers) nor a config key of the files");
  }
  const std::string text = format_results_report(files, o);
  std::fwrite(text.data(), 1, text.size(), stdout);
  bool partial = false;
  for (const auto& f : files)
    if (f.status != "complete") {
      partial = true;
      // csv and json carry no banner a reader would see: say it on stderr as well.
      if (o.format == "csv" || o.format == "json")
        std::fprintf(stderr, "moebench: warning: %s: %s\n", f.path.c_str(),
                     partial_line(f).substr(9).c_str());
    }
  return partial ? 3 : 0;
}

}  // namespace moe
