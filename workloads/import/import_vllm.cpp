// vLLM's per-request routed experts (`routed_experts`): one NumPy .npy file per request, expert ids
// [seq_len, layers, topk], int16 or int32, -1 in unused slots (at the end of a row). --in takes the
// files or folders of them (a folder's *.npy in name order); one request = one sequence:
//   - /tokens/sequence = the request's index in the input order, /tokens/position = its row;
//   - steps hold whole requests: with --tokens-per-step N, a step takes requests until the next
//     would pass N tokens (a longer request has a step of its own); 0 (default): one step;
//   - kind assignments, top_k = the widest row, variable_k when rows have fewer ids; the files hold
//     no weights: weights_are = unknown and each recorded expert gets weight 1/k of its row;
//   - a row with no id at all (all -1) means the token was not routed in that layer: a token that
//     some layers route and others not is a layer mismatch (--layer-mismatch); a token no layer
//     routes is dropped (counted on stderr);
//   - --experts E is required (ids must be < E), --layers names the model's layer numbers.
// Malformed: dtype other than int16/int32, an array that is not 3-D, files of different layers or
// topk, an id outside [-1, E), an id after a -1 or twice in a row, a truncated file.
#include <algorithm>
#include <cstdio>
#include <filesystem>

#include "harness/core/error.hpp"
#include "workloads/import/importers.hpp"
#include "workloads/import/npy_array.hpp"
#include "workloads/import/step_align.hpp"
#include "workloads/trace_file.hpp"

namespace moe {
namespace {

std::vector<std::string> npy_files(const std::vector<std::string>& inputs) {
  std::vector<std::string> files;
  for (const auto& in : inputs) {
    if (!std::filesystem::is_directory(in)) {
      files.push_back(in);
      continue;
    }
    std::vector<std::string> found;
    for (const auto& e : std::filesystem::directory_iterator(in))
      if (e.path().extension() == ".npy") found.push_back(e.path().string());
    if (found.empty()) throw InputError(in + ": no .npy files in the folder");
    std::sort(found.begin(), found.end());
    files.insert(files.end(), found.begin(), found.end());
  }
  return files;
}

std::string at(const std::string& path, int64_t t, int64_t l) {
  return path + ": token " + std::to_string(t) + " layer " + std::to_string(l) +
         ": field expert_ids";
}

// Ids of row (t, l): checks them; returns how many ids the row holds (the rest are -1).
int32_t check_row(const std::string& path, const int64_t* row, int64_t K, int64_t E, int64_t t,
                  int64_t l) {
  int32_t n = 0;
  for (int64_t j = 0; j < K; ++j) {
    const int64_t id = row[j];
    if (id == -1) continue;
    if (id < 0 || id >= E)
      throw InputError(at(path, t, l) + ": expert id " + std::to_string(id) + " outside [0, " +
                       std::to_string(E) + ") (--experts " + std::to_string(E) +
                       "; -1 marks an empty slot)");
    if (n != j)
      throw InputError(at(path, t, l) + ": slot " + std::to_string(j) + " holds expert " +
                       std::to_string(id) +
                       " after an empty slot (-1 must only pad the end of a row)");
    for (int64_t q = 0; q < j; ++q)
      if (row[q] == id)
        throw InputError(at(path, t, l) + ": expert id " + std::to_string(id) + " twice");
    ++n;
  }
  return n;
}

}  // namespace

void import_vllm_routed(const ImportOptions& o) {
  const std::vector<std::string> files = npy_files(o.inputs);
  if (files.empty()) throw InputError("trace convert --from vllm-routed: no --in files");
  const LayerMismatch policy = parse_layer_mismatch(o.layer_mismatch);
  if (o.weights_are != "unknown")
    throw InputError("--weights-are " + o.weights_are +
                     ": vLLM routed_experts arrays carry no weights (ids only)");
  if (o.experts < 1)
    throw InputError(
        "trace convert --from vllm-routed: needs --experts E (expert ids must be < E)");
  const int64_t E = o.experts;

  // Pass 1: headers, ids, widths.
  int64_t L = -1, K = -1;
  std::vector<int64_t> rows(files.size());
  int32_t max_k = 0, min_k = 1 << 30;
  for (size_t f = 0; f < files.size(); ++f) {
    const NpyArray a = NpyArray::open(files[f]);
    if (a.descr != "<i2" && a.descr != "<i4")
      throw InputError(files[f] + ": header field descr: dtype '" + a.descr +
                       "' is not int16 or int32 (routed_experts holds int16/int32 expert ids)");
    if (a.shape.size() != 3)
      throw InputError(files[f] + ": header field shape: " + a.shape_text() + " has " +
                       std::to_string(a.shape.size()) +
                       " dimensions (routed_experts is [seq_len, layers, topk])");
    if (L < 0) L = a.shape[1], K = a.shape[2];
    if (a.shape[1] != L || a.shape[2] != K)
      throw InputError(files[f] + ": header field shape: " + a.shape_text() + ", but " + files[0] +
                       " has " + std::to_string(L) + " layers and topk " + std::to_string(K));
    rows[f] = a.shape[0];
    const std::vector<int64_t> d = a.read_integers();
    for (int64_t t = 0; t < a.shape[0]; ++t)
      for (int64_t l = 0; l < L; ++l) {
        const int32_t n = check_row(files[f], d.data() + (t * L + l) * K, K, E, t, l);
        if (n > 0) max_k = std::max(max_k, n), min_k = std::min(min_k, n);
      }
  }
  if (L < 1 || K < 1) throw InputError(files[0] + ": header field shape: no layers or no slots");
  if (max_k < 1) throw InputError(files[0] + ": no token has an expert id in any layer");
  std::vector<int64_t> layer_ids = o.layer_ids;
  if (layer_ids.empty())
    for (int64_t l = 0; l < L; ++l) layer_ids.push_back(l);
  if (static_cast<int64_t>(layer_ids.size()) != L)
    throw InputError("--layers: " + std::to_string(layer_ids.size()) +
                     " layer numbers for the files' " + std::to_string(L) + " layers");

  TraceWriterOptions w;
  w.kind = "assignments";
  w.num_experts = static_cast<int32_t>(E);
  w.num_layers = static_cast<int32_t>(L);
  w.layer_ids = layer_ids;
  w.top_k = max_k;
  w.variable_k = min_k != max_k;
  w.has_sequences = true;
  w.weights_are = "unknown";
  w.model = o.model;
  w.force = o.force;
  w.created_by = o.created_by;
  w.capture_method = "vllm routed_experts (per-request .npy)";
  w.source =
      files.size() == 1 ? files[0] : files[0] + " ... (" + std::to_string(files.size()) + " files)";
  TraceWriter writer(o.out, w);

  AlignOptions ao;
  ao.policy = policy;
  ao.sort_by_key = true;
  ao.origin = [&](int32_t f, int64_t t) {
    return files[static_cast<size_t>(f)] + ": token " + std::to_string(t);
  };
  std::vector<int64_t> dropped(static_cast<size_t>(L), 0);
  int64_t unrouted = 0;
  int32_t out_step = 0;
  std::vector<std::vector<StepToken>> toks(static_cast<size_t>(L));
  std::vector<std::vector<int32_t>> pool(static_cast<size_t>(L));
  for (size_t a = 0; a < files.size();) {
    size_t b = a + 1;
    int64_t n_step = rows[a];
    while (b < files.size() && o.tokens_per_step > 0 && n_step + rows[b] <= o.tokens_per_step)
      n_step += rows[b++];
    if (o.tokens_per_step == 0) b = files.size();
    for (int64_t l = 0; l < L; ++l)
      toks[static_cast<size_t>(l)].clear(), pool[static_cast<size_t>(l)].clear();
    for (size_t f = a; f < b; ++f) {
      const std::vector<int64_t> d = NpyArray::open(files[f]).read_integers();
      for (int64_t t = 0; t < rows[f]; ++t) {
        bool any = false;
        for (int64_t l = 0; l < L; ++l) {
          const int64_t* row = d.data() + (t * L + l) * K;
          if (row[0] == -1) continue;
          any = true;
          auto& p = pool[static_cast<size_t>(l)];
          StepToken tk;
          tk.sequence = static_cast<int64_t>(f);
          tk.position = t;
          tk.payload = static_cast<int64_t>(p.size()) / max_k;
          tk.file = static_cast<int32_t>(f);
          tk.record = t;
          for (int32_t j = 0; j < max_k; ++j)
            p.push_back(j < K ? static_cast<int32_t>(row[j]) : -1);
          toks[static_cast<size_t>(l)].push_back(tk);
        }
        unrouted += !any;
      }
    }
    ao.file = files[a];
    const AlignedStep st = align_step(out_step, layer_ids, toks, ao);
    for (int64_t l = 0; l < L; ++l)
      dropped[static_cast<size_t>(l)] += st.dropped[static_cast<size_t>(l)];
    const auto n = static_cast<int64_t>(st.tokens.size());
    if (n == 0) {
      a = b;
      continue;
    }
    std::vector<int64_t> seq(static_cast<size_t>(n));
    std::vector<int32_t> pos(static_cast<size_t>(n));
    for (int64_t t = 0; t < n; ++t) {
      seq[static_cast<size_t>(t)] = st.tokens[static_cast<size_t>(t)].sequence;
      pos[static_cast<size_t>(t)] =
          static_cast<int32_t>(st.tokens[static_cast<size_t>(t)].position);
    }
    const int64_t first = writer.append_tokens(out_step, n, seq, pos);
    std::vector<int32_t> ids(static_cast<size_t>(n * max_k));
    std::vector<float> wts(static_cast<size_t>(n * max_k));
    for (int64_t l = 0; l < L; ++l) {
      std::fill(ids.begin(), ids.end(), -1);
      std::fill(wts.begin(), wts.end(), 0.f);
      for (int64_t t = 0; t < n; ++t) {
        const int64_t src = st.payload[static_cast<size_t>(l)][static_cast<size_t>(t)];
        if (src < 0) continue;
        const int32_t* row = pool[static_cast<size_t>(l)].data() + src * max_k;
        int32_t k = 0;
        while (k < max_k && row[k] >= 0) ++k;
        for (int32_t j = 0; j < k; ++j) {
          ids[static_cast<size_t>(t * max_k + j)] = row[j];
          wts[static_cast<size_t>(t * max_k + j)] = 1.f / static_cast<float>(k);
        }
      }
      writer.write_assignments(static_cast<int32_t>(l), first, n, ids.data(), wts.data());
    }
    ++out_step;
    a = b;
  }
  if (out_step == 0) throw InputError(files[0] + ": no token is left in any step");
  writer.finish();
  if (unrouted)
    std::fprintf(
        stderr, "trace convert: %lld tokens have no expert id in any layer (not routed): dropped\n",
        static_cast<long long>(unrouted));
  if (policy == LayerMismatch::intersect)
    std::fprintf(
        stderr,
        "trace convert: --layer-mismatch intersect dropped tokens missing from other layers: %s\n",
        dropped_summary(layer_ids, dropped).c_str());
}

}  // namespace moe
