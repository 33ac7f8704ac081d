// Megatron-Core's router tracer (megatron/core/transformer/moe/router_trace.py, enabled by
// --moe-routing-trace-path DIR): one JSON-lines file per rank, DIR/router_trace_rank{r}.jsonl, one
// record per (step, block, layer):
//   {"step": 0, "stage": "pre_dispatch", "block": "decoder", "layer": 3, "rank": 0,
//    "num_tokens": 128, "topk": 8, "top_indices": [[12, 45, ...], ...]}
// MTP layers carry "block": "mtp" and "mtp_idx". With --moe-routing-trace-capture-logits the run
// also wrote DIR/logits_rank{r}.bin, the bfloat16 pre-top-k router logits [num_tokens, E] of each
// record at byte `logit_offset` (`logit_bytes` long, shape `logit_shape`).
//
// --in takes the folder (every router_trace_rank*.jsonl in it) or the files. The trace:
//   - kind `logits` when every kept record has the sidecar fields (the full logits: every router
//     runs on them), else `assignments` from top_indices (no weights: weights_are unknown, each
//     recorded expert gets weight 1/k). --ignore-logits imports the ids only.
//   - step = the record's step (renumbered 0..S-1 in order); a step's tokens are, rank by rank, the
//     rows of that rank's records (several records of one (step, layer, rank) are micro-batches,
//     taken in file order); /tokens/rank = the record's rank, /tokens/position = the row's index in
//     its rank's stream of the step; sequences are unknown.
//   - decoder layers keep their numbers; MTP records are skipped (counted on stderr) unless
//     --mtp-layers import, which stores MTP head i's layer j as layer 1000·(i+1) + j.
// Records carry no token identity beyond (rank, row), so the layers of a step must hold the same
// number of rows per rank (--layer-mismatch error; intersect and per-layer are refused).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>

#include "harness/core/error.hpp"
#include "workloads/import/importers.hpp"
#include "workloads/import/json.hpp"
#include "workloads/import/step_align.hpp"
#include "workloads/trace_file.hpp"

namespace moe {
namespace {

constexpr int64_t kMtpLayerBase = 1000;

struct Rec {
  int32_t file = 0;
  int64_t line = 0;
  std::streamoff offset = 0;
  int64_t step = 0, layer = 0, n = 0;
  int32_t rank = 0, topk = 0;
  bool logits = false;
};

std::string where(const std::string& path, int64_t line) {
  return path + ": line " + std::to_string(line);
}

[[noreturn]] void bad(const std::string& path, int64_t line, const std::string& field,
                      const std::string& what) {
  throw InputError(where(path, line) + ": field " + field + ": " + what);
}

int64_t integer(const json::Value& rec, const char* key, const std::string& path, int64_t line) {
  const json::Value* v = rec.find(key);
  if (!v) throw InputError(where(path, line) + ": field " + key + " is missing");
  if (!v->is_number() || v->number != std::floor(v->number) ||
      std::abs(v->number) > 9007199254740992.0)
    bad(path, line, key, "'" + v->as_text() + "' is not an integer");
  return static_cast<int64_t>(v->number);
}

std::vector<std::string> trace_files(const std::vector<std::string>& inputs) {
  std::vector<std::string> files;
  static const std::regex name(R"(router_trace_rank(\d+)\.jsonl)");
  for (const auto& in : inputs) {
    if (!std::filesystem::is_directory(in)) {
      files.push_back(in);
      continue;
    }
    std::vector<std::pair<int64_t, std::string>> found;
    for (const auto& e : std::filesystem::directory_iterator(in)) {
      std::smatch m;
      const std::string f = e.path().filename().string();
      if (std::regex_match(f, m, name)) found.emplace_back(std::stoll(m[1]), e.path().string());
    }
    if (found.empty()) throw InputError(in + ": no router_trace_rank*.jsonl files in the folder");
    std::sort(found.begin(), found.end());
    for (auto& f : found) files.push_back(f.second);
  }
  return files;
}

float bf16_to_float(uint16_t h) {
  const uint32_t bits = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

}  // namespace

void import_megatron(const ImportOptions& o) {
  if (o.inputs.empty()) throw InputError("trace convert --from megatron: no --in files");
  const LayerMismatch policy = parse_layer_mismatch(o.layer_mismatch);
  if (policy != LayerMismatch::error)
    throw InputError(
        "--layer-mismatch " + o.layer_mismatch +
        ": Megatron router-trace records carry no token identity (sequence, position), "
        "so tokens of different layers cannot be matched; only error is possible");
  if (o.mtp_layers != "skip" && o.mtp_layers != "import")
    throw InputError("--mtp-layers " + o.mtp_layers + ": unknown value (known: skip, import)");
  if (o.weights_are != "unknown")
    throw InputError("--weights-are " + o.weights_are +
                     ": Megatron router-trace records carry no weights (top_indices only)");
  const std::vector<std::string> files = trace_files(o.inputs);

  // Pass 1: the records' structure, steps and layers; the rows are checked in pass 2.
  std::vector<Rec> recs;
  int64_t skipped_mtp = 0, skipped_filter = 0;
  int64_t E_logits = 0;
  int32_t max_k = 0, min_k = 1 << 30;
  int64_t first_logit_line = -1, first_plain_line = -1;
  int32_t first_logit_file = 0, first_plain_file = 0;
  for (int32_t fi = 0; fi < static_cast<int32_t>(files.size()); ++fi) {
    const std::string& path = files[static_cast<size_t>(fi)];
    std::ifstream in(path, std::ios::binary);
    if (!in) throw InputError(path + ": cannot open file");
    std::string line;
    int64_t n = 0;
    for (std::streamoff off = in.tellg(); std::getline(in, line); off = in.tellg()) {
      ++n;
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      json::Value rec;
      try {
        rec = json::parse(line);
      } catch (const std::exception& e) {
        throw InputError(where(path, n) + ": malformed JSON, " + e.what());
      }
      bool skip = false;
      for (const auto& [k, v] : o.skip_if) {
        const json::Value* x = rec.find(k);
        if (x && x->as_text() == v) skip = true;
      }
      if (skip) {
        ++skipped_filter;
        continue;
      }
      Rec r;
      r.file = fi;
      r.line = n;
      r.offset = off;
      r.step = integer(rec, "step", path, n);
      r.layer = integer(rec, "layer", path, n);
      r.rank = static_cast<int32_t>(integer(rec, "rank", path, n));
      if (r.rank < 0) bad(path, n, "rank", std::to_string(r.rank) + " is negative");
      if (const json::Value* st = rec.find("stage"); st && st->as_text() != "pre_dispatch")
        bad(path, n, "stage", "'" + st->as_text() + "' is not a known stage (known: pre_dispatch)");
      const json::Value* block = rec.find("block");
      const std::string b = block ? block->as_text() : "decoder";
      if (b == "mtp") {
        const int64_t idx = integer(rec, "mtp_idx", path, n);
        if (o.mtp_layers == "skip") {
          ++skipped_mtp;
          continue;
        }
        if (idx < 0 || r.layer < 0 || r.layer >= kMtpLayerBase)
          bad(path, n, "mtp_idx",
              "MTP head " + std::to_string(idx) + " layer " + std::to_string(r.layer) +
                  " cannot be numbered 1000*(mtp_idx+1)+layer");
        r.layer += kMtpLayerBase * (idx + 1);
      } else if (b != "decoder") {
        bad(path, n, "block", "'" + b + "' is not a known block (known: decoder, mtp)");
      } else if (o.mtp_layers == "import" && r.layer >= kMtpLayerBase) {
        bad(path, n, "layer",
            std::to_string(r.layer) +
                " collides with the MTP layer numbers of --mtp-layers import");
      }
      const json::Value* ti = rec.find("top_indices");
      if (!ti) throw InputError(where(path, n) + ": field top_indices is missing");
      if (!ti->is_array()) bad(path, n, "top_indices", "not a list of rows");
      r.n = static_cast<int64_t>(ti->items.size());
      if (rec.find("num_tokens") && integer(rec, "num_tokens", path, n) != r.n)
        bad(path, n, "num_tokens",
            std::to_string(integer(rec, "num_tokens", path, n)) + " but top_indices has " +
                std::to_string(r.n) + " rows");
      for (const auto& row : ti->items) {
        if (!row.is_array()) bad(path, n, "top_indices", "a row is not a list of expert ids");
        const auto k = static_cast<int32_t>(row.items.size());
        if (r.topk == 0) r.topk = k;
        if (k != r.topk)
          bad(path, n, "top_indices",
              "rows of " + std::to_string(r.topk) + " and " + std::to_string(k) + " ids");
      }
      if (rec.find("topk") && r.n > 0 && integer(rec, "topk", path, n) != r.topk)
        bad(path, n, "topk",
            std::to_string(integer(rec, "topk", path, n)) + " but the rows of top_indices have " +
                std::to_string(r.topk) + " ids");
      if (r.n > 0) {
        max_k = std::max(max_k, r.topk);
        min_k = std::min(min_k, r.topk);
      }
      r.logits = rec.find("logit_offset") || rec.find("logit_bytes") || rec.find("logit_shape");
      if (r.logits) {  // the sidecar's fields (with --ignore-logits they still give E)
        const json::Value* shape = rec.find("logit_shape");
        if (!shape) throw InputError(where(path, n) + ": field logit_shape is missing");
        if (!o.ignore_logits) {
          integer(rec, "logit_offset", path, n);
          integer(rec, "logit_bytes", path, n);
        }
        if (!shape->is_array() || shape->items.size() != 2)
          bad(path, n, "logit_shape",
              "'" + shape->as_text() + "' is not [num_tokens, num_experts]");
        const int64_t e = static_cast<int64_t>(shape->items[1].number);
        if (E_logits == 0) E_logits = e;
        if (e != E_logits)
          bad(path, n, "logit_shape",
              std::to_string(e) + " experts, earlier records have " + std::to_string(E_logits));
      }
      if (r.logits && first_logit_line < 0) first_logit_line = n, first_logit_file = fi;
      if (!r.logits && first_plain_line < 0) first_plain_line = n, first_plain_file = fi;
      recs.push_back(r);
    }
    if (in.bad()) throw InputError(path + ": read error");
  }
  if (recs.empty())
    throw InputError(files[0] + ": no records left (" + std::to_string(skipped_filter) +
                     " skipped by --skip-if, " + std::to_string(skipped_mtp) +
                     " MTP records skipped; --mtp-layers import keeps them)");
  if (max_k < 1) throw InputError(files[0] + ": every record has empty top_indices");
  const bool logits = !o.ignore_logits && first_logit_line >= 0;
  if (logits && first_plain_line >= 0)
    throw InputError(where(files[static_cast<size_t>(first_plain_file)], first_plain_line) +
                     ": field logit_offset is missing while " +
                     where(files[static_cast<size_t>(first_logit_file)], first_logit_line) +
                     " has logits (--ignore-logits imports the top-k ids only)");
  int32_t E = o.experts;
  if (E_logits > 0 && (logits || E < 1)) {
    if (logits && E > 0 && E != E_logits)
      throw InputError("--experts " + std::to_string(E) + ": the logits of " + files[0] + " have " +
                       std::to_string(E_logits) + " experts (logit_shape)");
    if (E_logits < 1 || E_logits > (1 << 20))
      throw InputError(files[0] + ": logit_shape gives " + std::to_string(E_logits) + " experts");
    E = static_cast<int32_t>(E_logits);
  }
  if (E < 1)
    throw InputError(
        "trace convert --from megatron: needs --experts E (the records hold no logits to tell it)");
  if (max_k > E)
    throw InputError(files[0] + ": top-" + std::to_string(max_k) + " of " + std::to_string(E) +
                     " experts");

  std::stable_sort(recs.begin(), recs.end(), [](const Rec& a, const Rec& b) {
    if (a.step != b.step) return a.step < b.step;
    if (a.layer != b.layer) return a.layer < b.layer;
    if (a.rank != b.rank) return a.rank < b.rank;
    return a.file != b.file ? a.file < b.file : a.line < b.line;
  });
  std::set<int64_t> layer_set;
  for (const Rec& r : recs) layer_set.insert(r.layer);
  const std::vector<int64_t> layer_ids(layer_set.begin(), layer_set.end());
  std::map<int64_t, size_t> layer_index;
  for (size_t i = 0; i < layer_ids.size(); ++i) layer_index[layer_ids[i]] = i;
  const size_t L = layer_ids.size();

  TraceWriterOptions w;
  w.kind = logits ? "logits" : "assignments";
  w.num_experts = E;
  w.num_layers = static_cast<int32_t>(L);
  w.layer_ids = layer_ids;
  w.top_k = max_k;
  w.variable_k = !logits && min_k != max_k;
  w.fp16 = o.fp16;
  w.has_sequences = false;
  w.has_rank = true;
  w.weights_are = "unknown";
  w.model = o.model;
  w.force = o.force;
  w.created_by = o.created_by;
  w.capture_method = logits ? "megatron router_trace.py with the logits sidecar"
                            : "megatron router_trace.py top_indices";
  for (const auto& p : files) w.source += (w.source.empty() ? "" : ",") + p;
  TraceWriter writer(o.out, w);

  // Pass 2: step by step.
  std::vector<std::ifstream> in(files.size());
  for (size_t f = 0; f < files.size(); ++f) in[f].open(files[f], std::ios::binary);
  using SidecarKey =
      std::pair<int32_t, int32_t>;  // (trace file, rank): its folder's logits_rank{r}.bin
  std::map<SidecarKey, std::ifstream> sidecars;
  std::map<SidecarKey, std::pair<std::string, int64_t>> sidecar_info;
  auto sidecar = [&](const Rec& r) -> std::ifstream& {
    const SidecarKey key{r.file, r.rank};
    auto it = sidecars.find(key);
    if (it != sidecars.end()) return it->second;
    const std::string path =
        (std::filesystem::path(files[static_cast<size_t>(r.file)]).parent_path() /
         ("logits_rank" + std::to_string(r.rank) + ".bin"))
            .string();
    std::ifstream s(path, std::ios::binary);
    if (!s)
      throw InputError(path + ": cannot open the logits sidecar of " +
                       where(files[static_cast<size_t>(r.file)], r.line) +
                       " (--ignore-logits imports the top-k ids only)");
    s.seekg(0, std::ios::end);
    sidecar_info[key] = {path, static_cast<int64_t>(s.tellg())};
    return sidecars.emplace(key, std::move(s)).first->second;
  };
  auto origin = [&](int32_t file, int64_t line) {
    return where(files[static_cast<size_t>(file)], line);
  };
  AlignOptions ao;
  ao.policy = policy;
  ao.sort_by_key = true;  // rank, then the row's index in the rank's stream
  ao.origin = origin;
  ao.remedy =
      "every layer must route the same rows of each rank (--layer-mismatch intersect and per-layer "
      "need a token "
      "identity these records lack)";
  ao.file = files.size() == 1 ? files[0] : std::filesystem::path(files[0]).parent_path().string();
  std::vector<std::vector<int32_t>> ids(L);
  std::vector<std::vector<float>> vals(L);
  std::vector<std::vector<StepToken>> toks(L);
  std::vector<uint16_t> raw;
  std::vector<float> row_out;
  std::vector<int32_t> id_out;
  std::vector<std::pair<float, int32_t>> order;
  int64_t differ = 0, compared = 0;
  int32_t out_step = 0;
  std::string line;
  for (size_t a = 0; a < recs.size();) {
    size_t b = a;
    while (b < recs.size() && recs[b].step == recs[a].step) ++b;
    for (size_t l = 0; l < L; ++l) ids[l].clear(), vals[l].clear(), toks[l].clear();
    std::map<std::pair<size_t, int32_t>, int64_t> next_pos;  // (layer, rank) -> rows so far
    for (size_t i = a; i < b; ++i) {
      const Rec& r = recs[i];
      const std::string& path = files[static_cast<size_t>(r.file)];
      std::ifstream& f = in[static_cast<size_t>(r.file)];
      f.clear();
      f.seekg(r.offset);
      if (!std::getline(f, line))
        throw InputError(where(path, r.line) + ": cannot read the record again (file changed?)");
      const json::Value rec = json::parse(line);
      const json::Value& ti = *rec.find("top_indices");
      const size_t l = layer_index.at(r.layer);
      int64_t& pos = next_pos[{l, r.rank}];
      for (int64_t j = 0; j < r.n; ++j) {
        const json::Value& row = ti.items[static_cast<size_t>(j)];
        const size_t base = ids[l].size();
        for (int32_t q = 0; q < r.topk; ++q) {
          const json::Value& x = row.items[static_cast<size_t>(q)];
          if (!x.is_number() || x.number != std::floor(x.number) || x.number < 0 || x.number >= E)
            bad(path, r.line, "top_indices",
                "row " + std::to_string(j) + ": expert id " + x.as_text() + " outside [0, " +
                    std::to_string(E) + ")");
          const auto id = static_cast<int32_t>(x.number);
          for (size_t p = base; p < ids[l].size(); ++p)
            if (ids[l][p] == id)
              bad(path, r.line, "top_indices",
                  "row " + std::to_string(j) + ": expert id " + std::to_string(id) + " twice");
          ids[l].push_back(id);
        }
        for (int32_t q = r.topk; q < max_k; ++q) ids[l].push_back(-1);
        StepToken t;
        t.sequence = r.rank;
        t.position = pos++;
        t.rank = r.rank;
        t.payload = static_cast<int64_t>(toks[l].size());
        t.file = r.file;
        t.record = r.line;
        toks[l].push_back(t);
      }
      if (!logits) continue;
      const int64_t off = integer(rec, "logit_offset", path, r.line),
                    bytes = integer(rec, "logit_bytes", path, r.line);
      const json::Value& shape = *rec.find("logit_shape");
      if (shape.items[0].number != static_cast<double>(r.n))
        bad(path, r.line, "logit_shape",
            shape.as_text() + " for " + std::to_string(r.n) + " rows of top_indices");
      if (bytes != r.n * E * 2)
        bad(path, r.line, "logit_bytes",
            std::to_string(bytes) + " but logit_shape [" + std::to_string(r.n) + ", " +
                std::to_string(E) + "] of bfloat16 needs " + std::to_string(r.n * E * 2));
      std::ifstream& s = sidecar(r);
      const auto& [spath, ssize] = sidecar_info.at(SidecarKey{r.file, r.rank});
      if (off < 0 || off + bytes > ssize)
        throw InputError(spath + ": truncated: " + where(path, r.line) + " (field logit_offset " +
                         std::to_string(off) + ", logit_bytes " + std::to_string(bytes) +
                         ") reads past its " + std::to_string(ssize) + " bytes");
      raw.resize(static_cast<size_t>(r.n * E));
      s.clear();
      s.seekg(off);
      s.read(reinterpret_cast<char*>(raw.data()), bytes);
      if (!s) throw InputError(spath + ": read error at byte " + std::to_string(off));
      for (int64_t j = 0; j < r.n; ++j) {
        const int64_t row0 = static_cast<int64_t>(vals[l].size());
        for (int32_t e = 0; e < E; ++e) {
          const float x = bf16_to_float(raw[static_cast<size_t>(j * E + e)]);  // little-endian host
          if (!std::isfinite(x) || (o.fp16 && std::abs(x) > 65504.f))
            throw InputError(spath + ": " + where(path, r.line) + ": field logits: row " +
                             std::to_string(j) + " expert " + std::to_string(e) + " = " +
                             std::to_string(x) +
                             (std::isfinite(x) ? " exceeds the float16 range (use --dtype fp32)"
                                               : " is not finite"));
          vals[l].push_back(x);
        }
        // How often the recorded choice is not the top-k of the logits (expert bias, group limits).
        order.clear();
        for (int32_t e = 0; e < E; ++e)
          order.emplace_back(-vals[l][static_cast<size_t>(row0 + e)], e);
        std::partial_sort(order.begin(), order.begin() + r.topk, order.end());
        const int32_t* rec_ids =
            ids[l].data() + (static_cast<int64_t>(ids[l].size()) / max_k - r.n + j) * max_k;
        bool same = true;
        for (int32_t q = 0; q < r.topk && same; ++q)
          same = std::find(rec_ids, rec_ids + r.topk, order[static_cast<size_t>(q)].second) !=
                 rec_ids + r.topk;
        differ += !same;
        ++compared;
      }
    }
    const AlignedStep st = align_step(recs[a].step, layer_ids, toks, ao);
    const auto n = static_cast<int64_t>(st.tokens.size());
    std::vector<int32_t> pos(static_cast<size_t>(n)), rank(static_cast<size_t>(n));
    for (int64_t t = 0; t < n; ++t) {
      pos[static_cast<size_t>(t)] =
          static_cast<int32_t>(st.tokens[static_cast<size_t>(t)].position);
      rank[static_cast<size_t>(t)] = st.tokens[static_cast<size_t>(t)].rank;
    }
    const int64_t row = writer.append_tokens(out_step, n, {}, pos, {}, {}, rank);
    for (size_t l = 0; l < L; ++l) {
      if (logits) {
        row_out.resize(static_cast<size_t>(n * E));
        for (int64_t t = 0; t < n; ++t)
          std::copy_n(vals[l].begin() + st.payload[l][static_cast<size_t>(t)] * E, E,
                      row_out.begin() + t * E);
        writer.write_logits(static_cast<int32_t>(l), row, n, row_out.data());
      } else {
        id_out.resize(static_cast<size_t>(n * max_k));
        std::vector<float> wout(static_cast<size_t>(n * max_k), 0.f);
        for (int64_t t = 0; t < n; ++t) {
          const int32_t* src = ids[l].data() + st.payload[l][static_cast<size_t>(t)] * max_k;
          int32_t k = 0;
          while (k < max_k && src[k] >= 0) ++k;
          for (int32_t q = 0; q < max_k; ++q) {
            id_out[static_cast<size_t>(t * max_k + q)] = src[q];
            wout[static_cast<size_t>(t * max_k + q)] = q < k ? 1.f / static_cast<float>(k) : 0.f;
          }
        }
        writer.write_assignments(static_cast<int32_t>(l), row, n, id_out.data(), wout.data());
      }
    }
    ++out_step;
    a = b;
  }
  writer.finish();
  if (skipped_mtp || skipped_filter)
    std::fprintf(stderr,
                 "trace convert: skipped %lld MTP records (--mtp-layers import keeps them), %lld "
                 "by --skip-if\n",
                 static_cast<long long>(skipped_mtp), static_cast<long long>(skipped_filter));
  if (logits && differ)
    std::fprintf(stderr,
                 "trace convert: %lld of %lld tokens' recorded top_indices are not the top-k of "
                 "their logits "
                 "(expert bias or group-limited routing); the trace keeps the logits\n",
                 static_cast<long long>(differ), static_cast<long long>(compared));
}

}  // namespace moe
