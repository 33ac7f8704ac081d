#pragma once
// The tokens of one step, layer by layer, as an importer's records gave them, and the policy for
// steps whose layers do not hold the same tokens (--layer-mismatch, workloads/TRACE_FORMAT.md
// "Messy captures"):
//   error      (default) refuse, naming the step, the layers, their counts and the option;
//   intersect  keep the tokens present in every layer of the step (keyed by sequence and position);
//   per-layer  keep the union of the tokens; each layer marks the ones it routes (/present).
// A token is identified by (sequence, position); the same key twice in one layer is an error
// naming both records.
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace moe {

enum class LayerMismatch { error, intersect, per_layer };

// "error" | "intersect" | "per-layer"; throws InputError naming --layer-mismatch.
LayerMismatch parse_layer_mismatch(const std::string& spec);
const char* layer_mismatch_name(LayerMismatch m);

// One token of one layer of a step.
struct StepToken {
  int64_t sequence = -1;  // key (with position)
  int64_t position = 0;
  int64_t token = -1;  // metadata: vocabulary id, source rank
  int32_t rank = -1;
  int64_t payload = 0;  // the importer's index of this token's ids / weights / logits
  int32_t file = 0;     // where the record came from (messages)
  int64_t record = 0;
};

struct AlignOptions {
  LayerMismatch policy = LayerMismatch::error;
  // Tokens ordered by (sequence, position) in the step (sequences known); otherwise in the order
  // of the first layer that holds them.
  bool sort_by_key = false;
  // "FILE: line N" (or "FILE: record N") of a token's origin, for messages.
  std::function<std::string(int32_t file, int64_t record)> origin;
  std::string file;  // names the input in step-level messages
  // The end of the mismatch message: what the user can do (default: the other policies).
  std::string remedy = "--layer-mismatch intersect keeps those";
};

struct AlignedStep {
  std::vector<StepToken> tokens;  // the step's tokens in trace order (metadata)
  std::vector<std::vector<int64_t>>
      payload;                   // [layer][token]: payload, -1 where absent (per-layer)
  std::vector<int64_t> dropped;  // [layer]: tokens intersect dropped from that layer
  bool ragged = false;           // some layer lacks some token (per-layer only)
};

// Aligns the layers of step `step` (layers[i] holds layer layer_ids[i]'s tokens, in record order).
// Throws InputError for a duplicated key or, under `error`, a mismatch.
AlignedStep align_step(int64_t step, const std::vector<int64_t>& layer_ids,
                       const std::vector<std::vector<StepToken>>& layers, const AlignOptions& o);

// "layer 3: 2, layer 5: 0" for the intersect summary.
std::string dropped_summary(const std::vector<int64_t>& layer_ids,
                            const std::vector<int64_t>& dropped);

}  // namespace moe
