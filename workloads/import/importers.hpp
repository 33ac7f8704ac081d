#pragma once
// Importers of routing captures into the moebench trace format (`moebench trace convert`).
// Malformed input is an InputError naming the file, line (or element) and field; the output is
// written under OUT.tmp and renamed only when the whole input was read, so a failed import leaves
// no output file.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace moe {

struct ImportOptions {
  std::vector<std::string> inputs;
  std::string out;
  bool force = false;
  std::vector<int64_t> layer_ids;             // --layers: the model's layer numbers of the inputs
  std::map<std::string, std::string> fields;  // --field NAME=KEY: where each trace field comes from
  std::vector<std::pair<std::string, std::string>> skip_if;  // --skip-if KEY=VALUE
  bool skip_incomplete = false;   // skip records lacking a mapped field (else an error)
  int32_t experts = 0;            // 0: from the input
  int32_t top_k = 0;              // counts: the model's k (information only; 0 unknown)
  int64_t tokens_per_step = 0;    // csv/npy: split the token stream into steps (0: one step)
  std::string kind = "auto";      // csv: auto | logits | assignments
  std::string values = "logits";  // csv dense rows / npy: logits | probabilities
  std::string weights_are =
      "unknown";  // assignments: probabilities | renormalized | gates | unknown
  std::string expert_prefix = "expert_";  // csv: expert column names
  bool fp16 = true;                       // logits stored as float16
  std::string domain_experts;  // --domain-experts: the domain -> experts map stored in the trace
  std::string token_table;  // npy: --token-table FILE.csv (sequence, position, domain, token, rank)
  std::string layer_mismatch = "error";  // error | intersect | per-layer (step_align.hpp)
  std::string mtp_layers = "skip";       // megatron: skip | import MTP records
  bool ignore_logits = false;            // megatron: import top_indices even with the sidecar
  std::string model, created_by;
};

// "2-9" or "0,1,4" or "0-3,8" -> layer numbers; throws InputError.
std::vector<int64_t> parse_layer_list(const std::string& spec);

void import_csv(const ImportOptions& options);
void import_jsonl(const ImportOptions& options);
// Megatron-Core's router tracer: a folder of router_trace_rank{r}.jsonl (+ logits_rank{r}.bin).
void import_megatron(const ImportOptions& options);
void import_npy(const ImportOptions& options);
// vLLM routed_experts: per-request .npy [seq_len, layers, topk] int16/int32 ids, -1 padded.
void import_vllm_routed(const ImportOptions& options);
// Count-only captures (kind counts): counts-csv, counts-npy and sglang-stat (an .npy written by
// workloads/capture/sglang_stat_to_npy.py); `from` names the format in messages.
void import_counts_csv(const ImportOptions& options);
void import_counts_npy(const ImportOptions& options, const std::string& from);

}  // namespace moe
