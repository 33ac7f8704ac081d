#pragma once
// Reader and writer of the moebench trace format (workloads/TRACE_FORMAT.md).
#include <mpi.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace moe {

inline constexpr const char* kTraceFormatName = "moebench-trace";
inline constexpr int64_t kTraceFormatVersion = 1;

struct TraceHeader {
  std::string kind;  // "logits" | "assignments" | "counts"
  int32_t num_experts = 0;
  int32_t num_layers = 0;
  int32_t num_steps = 0;
  int64_t num_tokens = 0;
  int32_t top_k = 0;
  bool variable_k = false;
  bool has_sequences = false;
  bool logits_fp16 = false;
  bool has_token_id = false, has_domain = false, has_rank = false;
  std::vector<int64_t> layer_ids;
  std::vector<int64_t> step_offsets;  // [S + 1]
  std::string weights_are =
      "unknown";  // assignments: probabilities | renormalized | gates | unknown
  std::string model, source, capture_method, created_by;
  std::string domain_experts;  // the domain -> experts map ("0=0;1=2+3"), "" when none
  bool logits() const { return kind == "logits"; }
  // Kind counts: per-step, per-layer, per-expert assignment counts only (/counts [S, L, E]); no
  // /tokens datasets. num_tokens is the assignments over all steps (the same in every layer of a
  // step) and step_offsets their running sum: replay turns each assignment into a token.
  bool counts() const { return kind == "counts"; }
};

// Token metadata of a row range; vectors of absent optional datasets stay empty.
struct TraceTokens {
  std::vector<int32_t> step;
  std::vector<int64_t> sequence;
  std::vector<int32_t> position;
  std::vector<int64_t> token_id;
  std::vector<int32_t> domain;
  std::vector<int32_t> rank;
};

// Reads a trace. With `collective`, the file is opened (collectively) with the MPI-IO driver on
// `comm` and each process reads its own hyperslabs with independent parallel-HDF5 transfers;
// otherwise one process reads alone. Errors name the file.
class TraceReader {
 public:
  TraceReader(const std::string& path, MPI_Comm comm = MPI_COMM_SELF, bool collective = false);
  ~TraceReader();
  TraceReader(const TraceReader&) = delete;
  TraceReader& operator=(const TraceReader&) = delete;

  const TraceHeader& header() const;
  const std::string& path() const;
  // Rows [first, first + n) of /tokens/* (global row index, all steps). `with_optional` also reads
  // token_id, domain and rank when present.
  void read_tokens(int64_t first, int64_t n, TraceTokens& out, bool with_optional = true);
  void read_sequences(int64_t first, int64_t n, std::vector<int64_t>& out);
  // Rows [first, first + n) of /tokens/domain (the trace must have it).
  void read_domains(int64_t first, int64_t n, std::vector<int32_t>& out);
  // Kind logits: trace layer `layer`, rows [first, first + n) as float32, [n, E].
  void read_logits(int32_t layer, int64_t first, int64_t n, float* out);
  // Kind assignments: [n, top_k] ids (-1 padding) and weights.
  void read_assignments(int32_t layer, int64_t first, int64_t n, int32_t* ids, float* weights);
  // Kind counts: steps [first_step, first_step + n) of /counts, [n, L, E] (validated at open).
  void read_counts(int32_t first_step, int32_t n, std::vector<int64_t>& out);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

struct TraceWriterOptions {
  std::string kind = "logits";
  int32_t num_experts = 0;
  int32_t num_layers = 0;
  int32_t top_k = 0;  // assignments: width of expert_ids; logits: the model's k or 0
  bool variable_k = false;
  bool fp16 = true;  // logits stored as float16 (else float32)
  bool has_sequences = false;
  bool has_token_id = false, has_domain = false, has_rank = false;
  std::vector<int64_t> layer_ids;  // default 0..L-1
  std::string weights_are = "unknown";
  std::string model, source, capture_method, created_by;
  // The domain -> experts map (parse_domain_experts syntax; "" none). Needs has_domain; every
  // appended domain label must be listed in it.
  std::string domain_experts;
  int deflate_level = 1;  // 0 = no compression
  bool force = false;     // replace an existing file
};

// Writes a trace under PATH.tmp and renames it to PATH in finish(); a writer destroyed before
// finish() removes the temporary file, so a failed conversion leaves nothing behind. Single
// process. Tokens are appended step by step; per-layer data of appended rows is written with
// write_logits / write_assignments in any order.
class TraceWriter {
 public:
  TraceWriter(const std::string& path, const TraceWriterOptions& options);
  ~TraceWriter();
  TraceWriter(const TraceWriter&) = delete;
  TraceWriter& operator=(const TraceWriter&) = delete;

  // Appends n tokens of `step` (== the last step or the next one); optional spans may be empty
  // (then required empty for every call), sequence may be empty when has_sequences is false.
  // Returns the global row of the first appended token.
  int64_t append_tokens(int32_t step, int64_t n, std::span<const int64_t> sequence,
                        std::span<const int32_t> position, std::span<const int64_t> token_id = {},
                        std::span<const int32_t> domain = {}, std::span<const int32_t> rank = {});
  void write_logits(int32_t layer, int64_t first, int64_t n, const float* logits);
  void write_assignments(int32_t layer, int64_t first, int64_t n, const int32_t* ids,
                         const float* weights);
  int64_t tokens() const;
  // Writes /steps/offset and the attributes, closes and renames.
  void finish();

 private:
  void create_datasets();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A domain -> experts map "D=E[+E...];D=...", e.g. "0=0;1=2+3": entry d holds the experts that
// are correct for domain d (empty: d not listed). Domains and experts are integers >= 0, experts
// < num_experts, no domain twice, no expert twice in a domain. Errors name `what` (the option).
std::vector<std::vector<int32_t>> parse_domain_experts(const std::string& spec, int32_t num_experts,
                                                       const std::string& what);
// The canonical text of a map (domains ascending, experts in the given order).
std::string format_domain_experts(const std::vector<std::vector<int32_t>>& map);

// Writes a count-only trace (kind counts): counts [steps, L, E], every count >= 0 and every layer
// of a step with the same total (errors name `source`, the step, layer and expert). Uses
// o.num_experts, o.num_layers, o.layer_ids, o.top_k (the model's k, 0 unknown), the description
// fields and o.force; written under PATH.tmp and renamed.
void write_counts_trace(const std::string& path, const TraceWriterOptions& o, int32_t steps,
                        const std::vector<int64_t>& counts, const std::string& source_name);
// The first problem of counts [steps, L, E] (negative count, layers of a step with different
// totals), "" when none; layer_ids name the layers, `where` prefixes the message.
std::string check_counts(const int64_t* counts, int32_t first_step, int32_t steps, int32_t L,
                         int32_t E, const std::vector<int64_t>& layer_ids);

// IEEE binary16 <-> binary32, round to nearest even.
uint16_t float_to_half(float f);
float half_to_float(uint16_t h);

// Reconstructed logits of an assignment row (TRACE_FORMAT.md "Replay"): out[E].
void reconstruct_logits(const int32_t* ids, const float* weights, int32_t k, int32_t E,
                        bool probabilities, float* out);

}  // namespace moe
