// Layer alignment of one imported step (step_align.hpp).
#include "workloads/import/step_align.hpp"

#include <algorithm>
#include <map>
#include <numeric>

#include "harness/core/error.hpp"

namespace moe {

LayerMismatch parse_layer_mismatch(const std::string& spec) {
  if (spec == "error") return LayerMismatch::error;
  if (spec == "intersect") return LayerMismatch::intersect;
  if (spec == "per-layer")  // align_step supports it; the trace format and replay do not yet
    throw InputError(
        "--layer-mismatch per-layer: not implemented yet (a trace cannot hold per-layer token sets "
        "and the "
        "replay cannot route them); --layer-mismatch intersect keeps the tokens every layer of the "
        "step has");
  throw InputError("--layer-mismatch " + spec +
                   ": unknown policy (known: error, intersect, per-layer)");
}

const char* layer_mismatch_name(LayerMismatch m) {
  switch (m) {
    case LayerMismatch::error:
      return "error";
    case LayerMismatch::intersect:
      return "intersect";
    case LayerMismatch::per_layer:
      return "per-layer";
  }
  return "?";
}

AlignedStep align_step(int64_t step, const std::vector<int64_t>& layer_ids,
                       const std::vector<std::vector<StepToken>>& layers, const AlignOptions& o) {
  using Key = std::pair<int64_t, int64_t>;
  const size_t L = layers.size();
  std::map<Key, int64_t> index;  // key -> index into `uni`
  std::vector<StepToken> uni;
  std::vector<int32_t> holders;                // [uni]: layers holding the token
  std::vector<std::vector<int64_t>> where(L);  // [layer][i]: uni index of its i-th token
  for (size_t l = 0; l < L; ++l) {
    std::map<Key, size_t> seen;
    for (size_t i = 0; i < layers[l].size(); ++i) {
      const StepToken& t = layers[l][i];
      const Key key{t.sequence, t.position};
      const auto [s, fresh] = seen.emplace(key, i);
      if (!fresh) {
        const StepToken& a = layers[l][s->second];
        throw InputError(o.origin(a.file, a.record) + " and " + o.origin(t.file, t.record) +
                         ": step " + std::to_string(step) + ": layer " +
                         std::to_string(layer_ids[l]) + ": sequence " + std::to_string(t.sequence) +
                         " position " + std::to_string(t.position) +
                         " is recorded twice (duplicated records)");
      }
      const auto [it, inserted] = index.emplace(key, static_cast<int64_t>(uni.size()));
      if (inserted) {
        uni.push_back(t);
        holders.push_back(0);
      }
      ++holders[static_cast<size_t>(it->second)];
      where[l].push_back(it->second);
    }
  }
  const int64_t N = static_cast<int64_t>(uni.size());
  const int64_t in_all = std::count(holders.begin(), holders.end(), static_cast<int32_t>(L));
  const bool mismatch = in_all != N;
  if (mismatch && o.policy == LayerMismatch::error) {
    // At least one layer lacks a token of the step: name the first complete layer and the short
    // ones.
    std::string full, partial;
    int shown = 0;
    for (size_t l = 0; l < L; ++l) {
      const int64_t n = static_cast<int64_t>(layers[l].size());
      const std::string s = "layer " + std::to_string(layer_ids[l]) + " has " + std::to_string(n);
      if (n == N) {
        if (full.empty()) full = s;
      } else if (shown++ < 4) {
        partial += (partial.empty() ? "" : ", ") + s;
      }
    }
    if (shown > 4) partial += ", ... (" + std::to_string(shown) + " layers short)";
    throw InputError(o.file + ": step " + std::to_string(step) +
                     ": the layers hold different tokens: " + (full.empty() ? "" : full + ", ") +
                     partial + " of the step's " + std::to_string(N) + " (" +
                     std::to_string(in_all) + " in every layer); " + o.remedy);
  }
  // Trace order of the union.
  std::vector<int64_t> order(static_cast<size_t>(N));
  std::iota(order.begin(), order.end(), int64_t{0});
  if (o.sort_by_key)
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
      const StepToken &x = uni[static_cast<size_t>(a)], &y = uni[static_cast<size_t>(b)];
      return x.sequence != y.sequence ? x.sequence < y.sequence : x.position < y.position;
    });
  const bool keep_all = o.policy != LayerMismatch::intersect;
  std::vector<int64_t> slot(static_cast<size_t>(N), -1);  // uni index -> row in the step
  AlignedStep out;
  for (int64_t u : order)
    if (keep_all || holders[static_cast<size_t>(u)] == static_cast<int32_t>(L)) {
      slot[static_cast<size_t>(u)] = static_cast<int64_t>(out.tokens.size());
      out.tokens.push_back(uni[static_cast<size_t>(u)]);
    }
  const size_t n = out.tokens.size();
  out.payload.assign(L, std::vector<int64_t>(n, -1));
  out.dropped.assign(L, 0);
  for (size_t l = 0; l < L; ++l)
    for (size_t i = 0; i < where[l].size(); ++i) {
      const int64_t row = slot[static_cast<size_t>(where[l][i])];
      if (row < 0)
        ++out.dropped[l];
      else
        out.payload[l][static_cast<size_t>(row)] = layers[l][i].payload;
    }
  out.ragged = keep_all && mismatch;
  return out;
}

std::string dropped_summary(const std::vector<int64_t>& layer_ids,
                            const std::vector<int64_t>& dropped) {
  std::string s;
  for (size_t l = 0; l < layer_ids.size(); ++l)
    s += (l ? ", " : "") + std::string("layer ") + std::to_string(layer_ids[l]) + ": " +
         std::to_string(dropped[l]);
  return s;
}

}  // namespace moe
