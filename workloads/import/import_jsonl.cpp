// JSON lines: one record per line. --field NAME=KEY maps trace fields to record keys (dotted paths
// allowed): experts (required: a list of expert ids for one token, or a list of such lists for
// several tokens), weights (same shape), layer, step, sequence, position, token, rank (scalars, or
// lists with one entry per token). --skip-if KEY=VALUE drops matching records (warm-up, metadata);
// --skip-incomplete drops records lacking a mapped key instead of failing. Records of one step must
// be contiguous; inside a step and layer, tokens keep the order of the records (then sorted by
// sequence and position when sequences are mapped), and every layer of a step must hold the same
// tokens. --experts is required (ids must be < E). (Megatron-Core's router traces: --from megatron,
// import_megatron.cpp.)
#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <map>
#include <numeric>
#include <set>

#include "harness/core/error.hpp"
#include "workloads/import/importers.hpp"
#include "workloads/import/json.hpp"
#include "workloads/import/step_align.hpp"
#include "workloads/import/weights_check.hpp"
#include "workloads/trace_file.hpp"

namespace moe {
namespace {

struct Token {
  int64_t sequence = -1, token = -1;
  int32_t position = 0, rank = -1, domain = -1;
  int64_t first = 0;  // into the step's id/weight pool
  int32_t count = 0;
  int32_t file = 0;  // where the record came from (messages)
  int64_t line = 0;
};

struct StepBuffer {
  std::map<int64_t, std::vector<Token>> layers;  // layer number -> tokens in order
  std::vector<int32_t> ids;
  std::vector<float> weights;
  void clear() {
    layers.clear();
    ids.clear();
    weights.clear();
  }
};

class Records {
 public:
  explicit Records(const ImportOptions& o) : o_(o) {
    static const std::set<std::string> known{"experts",  "weights", "layer", "step",  "sequence",
                                             "position", "token",   "rank",  "domain"};
    for (const auto& [k, v] : o.fields) {
      if (!known.count(k))
        throw InputError("--field " + k + "=" + v +
                         ": unknown field (known: experts, weights, layer, step, sequence, "
                         "position, token, rank, domain)");
      map_[k] = v;
      optional_.erase(k);
    }
    if (!map_.count("experts"))
      throw InputError(
          "trace convert --from jsonl: needs --field experts=KEY (the record key holding the "
          "expert ids)");
    if (o.experts < 1)
      throw InputError("trace convert --from jsonl: needs --experts E (expert ids must be < E)");
  }
  bool mapped(const char* f) const { return map_.count(f) > 0; }

  // Visits every kept record: fn(path, line, record). Counts skipped records.
  template <class Fn>
  void each(Fn&& fn) {
    skipped_filter_ = skipped_incomplete_ = 0;
    for (const auto& path : o_.inputs) {
      std::ifstream in(path);
      if (!in) throw InputError(path + ": cannot open file");
      std::string line;
      int64_t n = 0;
      while (std::getline(in, line)) {
        ++n;
        if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
        json::Value rec;
        try {
          rec = json::parse(line);
        } catch (const std::exception& e) {
          throw InputError(path + ": line " + std::to_string(n) + ": malformed JSON, " + e.what());
        }
        bool skip = false;
        for (const auto& [k, v] : o_.skip_if) {
          const json::Value* x = rec.find(k);
          if (x && x->as_text() == v) skip = true;
        }
        if (skip) {
          ++skipped_filter_;
          continue;
        }
        std::string missing;
        for (const auto& [f, key] : map_)
          if (!optional_.count(f) && !rec.find(key)) missing = f;
        if (!missing.empty()) {
          if (o_.skip_incomplete) {
            ++skipped_incomplete_;
            continue;
          }
          throw InputError(path + ": line " + std::to_string(n) + ": field " + missing + " (key '" +
                           map_.at(missing) +
                           "') is missing (--skip-incomplete drops such records, --skip-if "
                           "KEY=VALUE drops others)");
        }
        fn(path, n, rec);
      }
    }
  }
  const json::Value* get(const json::Value& rec, const char* f) const {
    const auto it = map_.find(f);
    return it == map_.end() ? nullptr : rec.find(it->second);
  }
  const std::string& key(const char* f) const { return map_.at(f); }
  int64_t skipped_filter_ = 0, skipped_incomplete_ = 0;

 private:
  const ImportOptions& o_;
  std::map<std::string, std::string> map_;
  std::set<std::string> optional_;
};

[[noreturn]] void bad(const std::string& path, int64_t line, const std::string& field,
                      const std::string& what) {
  throw InputError(path + ": line " + std::to_string(line) + ": field " + field + ": " + what);
}

int64_t as_int(const json::Value& v, const std::string& path, int64_t line,
               const std::string& field) {
  if (!v.is_number() || v.number != std::floor(v.number) || std::abs(v.number) > 9007199254740992.0)
    bad(path, line, field, "'" + v.as_text() + "' is not an integer");
  return static_cast<int64_t>(v.number);
}

// Scalar field f of token j of a record with n tokens (a scalar applies to all, a list has n).
const json::Value* per_token(const json::Value* v, int64_t j, int64_t n, const std::string& path,
                             int64_t line, const std::string& f) {
  if (!v) return nullptr;
  if (!v->is_array()) return v;
  if (static_cast<int64_t>(v->items.size()) != n)
    bad(path, line, f,
        std::to_string(v->items.size()) + " entries for " + std::to_string(n) + " tokens");
  return &v->items[static_cast<size_t>(j)];
}

}  // namespace

void import_jsonl(const ImportOptions& o) {
  if (o.inputs.empty()) throw InputError("trace convert --from jsonl: no --in files");
  Records records(o);
  const int32_t E = o.experts;

  // Pass 1: validate, find the layers and the widest row.
  std::set<int64_t> layer_set;
  int32_t max_k = 0, min_k = 1 << 30;
  int64_t kept = 0;
  // Reads the ids (and weights) of one record: rows[j] = its j-th token's list.
  auto rows_of = [&](const std::string& path, int64_t line, const json::Value& rec,
                     std::vector<const json::Value*>& ids, std::vector<const json::Value*>& ws) {
    const json::Value& ex = *records.get(rec, "experts");
    const std::string f = "experts (key '" + records.key("experts") + "')";
    if (!ex.is_array()) bad(path, line, f, "not a list of expert ids");
    ids.clear();
    ws.clear();
    const bool many = !ex.items.empty() && ex.items[0].is_array();
    if (many)
      for (const auto& r : ex.items) ids.push_back(&r);
    else
      ids.push_back(&ex);
    const json::Value* w = records.get(rec, "weights");
    if (w) {
      const std::string fw = "weights (key '" + records.key("weights") + "')";
      if (!w->is_array()) bad(path, line, fw, "not a list");
      if (many) {
        if (w->items.size() != ex.items.size())
          bad(path, line, fw,
              std::to_string(w->items.size()) + " rows for " + std::to_string(ex.items.size()) +
                  " rows of expert ids");
        for (const auto& r : w->items) ws.push_back(&r);
      } else {
        ws.push_back(w);
      }
      for (size_t j = 0; j < ids.size(); ++j)
        if (!ws[j]->is_array() || ws[j]->items.size() != ids[j]->items.size())
          bad(path, line, fw,
              "token " + std::to_string(j) + ": " +
                  std::to_string(ws[j]->is_array() ? ws[j]->items.size() : 1) + " weights for " +
                  std::to_string(ids[j]->items.size()) +
                  " expert ids (ids and weights differ in length)");
    }
    for (size_t j = 0; j < ids.size(); ++j) {
      if (!ids[j]->is_array())
        bad(path, line, f, "token " + std::to_string(j) + ": not a list of expert ids");
      for (size_t q = 0; q < ids[j]->items.size(); ++q) {
        const int64_t id = as_int(ids[j]->items[q], path, line, f);
        if (id < 0 || id >= E)
          bad(path, line, f,
              "expert id " + std::to_string(id) + " outside [0, " + std::to_string(E) +
                  ") (--experts " + std::to_string(E) + ")");
        for (size_t r = 0; r < q; ++r)
          if (ids[j]->items[r].number == ids[j]->items[q].number)
            bad(path, line, f,
                "token " + std::to_string(j) + ": expert id " + std::to_string(id) + " twice");
      }
      if (!ws.empty()) {
        std::vector<float> wv;
        for (const auto& x : ws[j]->items) {
          if (!x.is_number() || !std::isfinite(x.number))
            bad(path, line, "weights (key '" + records.key("weights") + "')",
                "'" + x.as_text() + "' is not a finite number");
          wv.push_back(static_cast<float>(x.number));
        }
        const std::string why =
            weights_contradiction(o.weights_are, wv.data(), static_cast<int32_t>(wv.size()));
        if (!why.empty())
          bad(path, line, "weights (key '" + records.key("weights") + "')",
              "token " + std::to_string(j) + ": " + why);
      }
    }
  };
  std::vector<const json::Value*> ids, ws;
  records.each([&](const std::string& path, int64_t line, const json::Value& rec) {
    rows_of(path, line, rec, ids, ws);
    const json::Value* l = records.get(rec, "layer");
    layer_set.insert(l ? as_int(*l, path, line, "layer") : 0);
    for (const auto* r : ids) {
      max_k = std::max(max_k, static_cast<int32_t>(r->items.size()));
      min_k = std::min(min_k, static_cast<int32_t>(r->items.size()));
    }
    ++kept;
  });
  if (kept == 0)
    throw InputError(o.inputs[0] + ": no records left (" + std::to_string(records.skipped_filter_) +
                     " skipped by --skip-if, " + std::to_string(records.skipped_incomplete_) +
                     " incomplete)");
  if (max_k < 1) throw InputError(o.inputs[0] + ": every record has empty expert lists");

  const std::vector<int64_t> layer_ids(layer_set.begin(), layer_set.end());
  TraceWriterOptions w;
  w.kind = "assignments";
  w.num_experts = E;
  w.num_layers = static_cast<int32_t>(layer_ids.size());
  w.layer_ids = layer_ids;
  w.top_k = max_k;
  w.variable_k = min_k != max_k;
  w.has_sequences = records.mapped("sequence");
  w.has_token_id = records.mapped("token");
  w.has_rank = records.mapped("rank");
  w.has_domain = records.mapped("domain");
  w.domain_experts = o.domain_experts;
  if (!records.mapped("weights") && o.weights_are != "unknown")
    throw InputError("--weights-are " + o.weights_are +
                     ": the records have no weights (map them with --field weights=KEY)");
  w.weights_are = records.mapped("weights") ? o.weights_are : "unknown";
  w.model = o.model;
  w.force = o.force;
  w.created_by = o.created_by;
  w.capture_method = "jsonl field mapping";
  for (const auto& p : o.inputs) w.source += (w.source.empty() ? "" : ",") + p;
  TraceWriter writer(o.out, w);

  // Pass 2: buffer one step, then write it.
  StepBuffer buf;
  int64_t cur_step = 0;
  bool have_step = false;
  std::set<int64_t> done_steps;
  int32_t out_step = 0;
  const LayerMismatch policy = parse_layer_mismatch(o.layer_mismatch);
  if (policy != LayerMismatch::error && !records.mapped("position"))
    throw InputError(
        "--layer-mismatch " + o.layer_mismatch +
        ": needs a token identity to match the layers' tokens: map --field position=KEY (and "
        "--field sequence=KEY)");
  AlignOptions ao;
  ao.policy = policy;
  ao.sort_by_key = w.has_sequences;
  ao.origin = [&](int32_t f, int64_t line) {
    return o.inputs[static_cast<size_t>(f)] + ": line " + std::to_string(line);
  };
  std::map<std::string, int32_t> file_index;
  for (size_t i = 0; i < o.inputs.size(); ++i)
    file_index.emplace(o.inputs[i], static_cast<int32_t>(i));
  std::vector<int64_t> dropped(layer_ids.size(), 0);
  std::vector<std::vector<StepToken>> toks(layer_ids.size());
  auto flush = [&]() {
    if (buf.layers.empty()) return;
    for (size_t i = 0; i < layer_ids.size(); ++i) {
      toks[i].clear();
      const auto it = buf.layers.find(layer_ids[i]);
      if (it == buf.layers.end()) continue;
      for (size_t j = 0; j < it->second.size(); ++j) {
        const Token& t = it->second[j];
        StepToken st;
        st.sequence = t.sequence;
        st.position = t.position;
        st.token = t.token;
        st.rank = t.rank;
        st.payload = static_cast<int64_t>(j);
        st.file = t.file;
        st.record = t.line;
        toks[i].push_back(st);
      }
    }
    ao.file = o.inputs[0];
    const AlignedStep st = align_step(cur_step, layer_ids, toks, ao);
    for (size_t i = 0; i < layer_ids.size(); ++i) dropped[i] += st.dropped[i];
    const int64_t n = static_cast<int64_t>(st.tokens.size());
    if (n == 0) {  // intersect left nothing of this step
      done_steps.insert(cur_step);
      buf.clear();
      return;
    }
    std::vector<int64_t> seq, tok;
    std::vector<int32_t> pos, rank, dom(static_cast<size_t>(n), -1);
    for (const auto& t : st.tokens) {
      seq.push_back(t.sequence);
      pos.push_back(static_cast<int32_t>(t.position));
      tok.push_back(t.token);
      rank.push_back(t.rank);
    }
    if (w.has_domain)  // a token's label, the same in every layer that routes it
      for (size_t li = 0; li < layer_ids.size(); ++li) {
        const auto it = buf.layers.find(layer_ids[li]);
        for (int64_t i = 0; i < n; ++i) {
          const int64_t src = st.payload[li][static_cast<size_t>(i)];
          if (src < 0) continue;
          const Token& t = it->second[static_cast<size_t>(src)];
          int32_t& d = dom[static_cast<size_t>(i)];
          if (d >= 0 && t.domain != d)
            throw InputError(o.inputs[static_cast<size_t>(t.file)] + ": line " +
                             std::to_string(t.line) + ": field domain (key '" +
                             records.key("domain") + "'): layer " + std::to_string(layer_ids[li]) +
                             " labels the token " + std::to_string(t.domain) +
                             ", an earlier layer " + std::to_string(d) +
                             " (field domain must be the same in every layer)");
          d = t.domain;
        }
      }
    const int64_t row = writer.append_tokens(
        out_step, n, w.has_sequences ? std::span<const int64_t>(seq) : std::span<const int64_t>{},
        pos, w.has_token_id ? std::span<const int64_t>(tok) : std::span<const int64_t>{},
        w.has_domain ? std::span<const int32_t>(dom) : std::span<const int32_t>{},
        w.has_rank ? std::span<const int32_t>(rank) : std::span<const int32_t>{});
    std::vector<int32_t> out_ids(static_cast<size_t>(n * max_k));
    std::vector<float> out_w(static_cast<size_t>(n * max_k));
    for (size_t li = 0; li < layer_ids.size(); ++li) {
      std::fill(out_ids.begin(), out_ids.end(), -1);
      std::fill(out_w.begin(), out_w.end(), 0.f);
      const auto it = buf.layers.find(layer_ids[li]);
      for (int64_t i = 0; i < n; ++i) {
        const int64_t src = st.payload[li][static_cast<size_t>(i)];
        if (src < 0) continue;
        const Token& t = it->second[static_cast<size_t>(src)];
        for (int32_t j = 0; j < t.count; ++j) {
          out_ids[static_cast<size_t>(i * max_k + j)] = buf.ids[static_cast<size_t>(t.first + j)];
          out_w[static_cast<size_t>(i * max_k + j)] = buf.weights[static_cast<size_t>(t.first + j)];
        }
      }
      writer.write_assignments(static_cast<int32_t>(li), row, n, out_ids.data(), out_w.data());
    }
    done_steps.insert(cur_step);
    ++out_step;
    buf.clear();
  };
  records.each([&](const std::string& path, int64_t line, const json::Value& rec) {
    rows_of(path, line, rec, ids, ws);
    const json::Value* sv = records.get(rec, "step");
    const int64_t step = sv ? as_int(*sv, path, line, "step") : 0;
    if (!have_step || step != cur_step) {
      flush();
      if (done_steps.count(step))
        bad(path, line, "step",
            "step " + std::to_string(step) +
                " appears again after other steps (records of a step must be contiguous)");
      cur_step = step;
      have_step = true;
    }
    const json::Value* lv = records.get(rec, "layer");
    const int64_t layer = lv ? as_int(*lv, path, line, "layer") : 0;
    auto& layer_tokens = buf.layers[layer];
    const int64_t n = static_cast<int64_t>(ids.size());
    for (int64_t j = 0; j < n; ++j) {
      Token t;
      const json::Value* s = per_token(records.get(rec, "sequence"), j, n, path, line, "sequence");
      const json::Value* p = per_token(records.get(rec, "position"), j, n, path, line, "position");
      const json::Value* k = per_token(records.get(rec, "token"), j, n, path, line, "token");
      const json::Value* r = per_token(records.get(rec, "rank"), j, n, path, line, "rank");
      const json::Value* d = per_token(records.get(rec, "domain"), j, n, path, line, "domain");
      t.sequence = s ? as_int(*s, path, line, "sequence") : -1;
      t.position = static_cast<int32_t>(p ? as_int(*p, path, line, "position")
                                          : static_cast<int64_t>(layer_tokens.size()));
      t.token = k ? as_int(*k, path, line, "token") : -1;
      t.rank = static_cast<int32_t>(r ? as_int(*r, path, line, "rank") : -1);
      if (d) {
        const int64_t label =
            as_int(*d, path, line, "domain (key '" + records.key("domain") + "')");
        if (label < 0 || label > std::numeric_limits<int32_t>::max())
          bad(path, line, "domain (key '" + records.key("domain") + "')",
              "domain " + std::to_string(label) + " is not in [0, 2^31)");
        t.domain = static_cast<int32_t>(label);
      }
      t.file = file_index.at(path);
      t.line = line;
      t.first = static_cast<int64_t>(buf.ids.size());
      t.count = static_cast<int32_t>(ids[static_cast<size_t>(j)]->items.size());
      for (int32_t q = 0; q < t.count; ++q) {
        buf.ids.push_back(static_cast<int32_t>(
            ids[static_cast<size_t>(j)]->items[static_cast<size_t>(q)].number));
        buf.weights.push_back(
            ws.empty() ? 1.f / static_cast<float>(t.count)
                       : static_cast<float>(
                             ws[static_cast<size_t>(j)]->items[static_cast<size_t>(q)].number));
      }
      layer_tokens.push_back(t);
    }
  });
  flush();
  if (out_step == 0)
    throw InputError(o.inputs[0] + ": --layer-mismatch intersect left no token in any step");
  writer.finish();
  if (policy == LayerMismatch::intersect)
    std::fprintf(stderr,
                 "trace convert: --layer-mismatch intersect dropped tokens missing from other "
                 "layers of their step: %s\n",
                 dropped_summary(layer_ids, dropped).c_str());
  if (records.skipped_filter_ || records.skipped_incomplete_)
    std::fprintf(stderr, "trace convert: skipped %lld records by --skip-if, %lld incomplete\n",
                 static_cast<long long>(records.skipped_filter_),
                 static_cast<long long>(records.skipped_incomplete_));
}

}  // namespace moe
