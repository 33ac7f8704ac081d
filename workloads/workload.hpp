#pragma once
#include <mpi.h>

#include <functional>
#include <memory>
#include <string>

#include "harness/core/args.hpp"
#include "harness/core/registry.hpp"
#include "harness/core/types.hpp"

namespace moe {

struct WorkloadSetup {
  int32_t num_experts = 0;
  int32_t num_layers = 0;
  int32_t top_k = 0;
  int32_t ep_size = 1;
  int64_t tokens_per_rank = 0;
  int64_t seq_len = 1;
  uint64_t seed = 0;
  // Trace replay only: the trace file, the processes that read it together (MPI-IO), and whether
  // any router needs logits (an assignment trace's reconstruction is skipped otherwise).
  std::string trace_file;
  MPI_Comm comm = MPI_COMM_SELF;
  bool need_logits = true;
  // Assignment traces: the tail completion of the unrecorded logits (workloads/trace_tail.hpp).
  std::string trace_tail = "none";
  std::string tail_prior = "popularity";
  double tail_noise = 1.0;
};

// Makes the router logits of global tokens [first_token, first_token + num_tokens) for one step and
// layer. Synthetic workloads draw every value from the counter-based RNG keyed by (seed, step,
// layer, global token index), so any split of the tokens over processes gives identical logits.
class Workload {
 public:
  explicit Workload(const WorkloadSetup& setup) : setup_(setup) {}
  virtual ~Workload() = default;
  // The tokens of EP ranks [first_rank, first_rank + num_ranks) for one step and layer, with the
  // batch's rank layout set. Collective over setup.comm for trace replay (every process calls it
  // for the same step and layer); synthetic workloads are not collective.
  void generate_ranks(int32_t step, int32_t layer, int32_t first_rank, int32_t num_ranks,
                      TokenBatch& out);
  // Global tokens [first_token, first_token + num_tokens) of one step and layer. Synthetic:
  // metadata, then fill_logits.
  virtual void generate(int32_t step, int32_t layer, int64_t first_token, int64_t num_tokens,
                        TokenBatch& out);
  // First global token of each of the ep_size ranks at `step`, and the step's total: [R + 1].
  // The same on every process, a function of (seed, step) only. Synthetic: tokens_per_rank each;
  // ragged workloads (source_ragged, lognormal) override it, every rank getting >= 1 token.
  virtual void rank_layout(int32_t step, std::vector<int64_t>& first_token_of_rank);
  // Trace replay with --trace-tail: the model, its fitted parameters and seed (JSON); "" otherwise.
  virtual std::string tail_params() const { return ""; }

 protected:
  // Fills out.logits; metadata (sequence, position, counts) is already set.
  virtual void fill_logits(TokenBatch& out) = 0;
  // rank_layout(step), cached for the latest step asked.
  const std::vector<int64_t>& layout(int32_t step);
  // Index of the first token of `step` in the packed stream of all steps' tokens: the sum of the
  // earlier steps' totals (step * R * tokens_per_rank for layouts whose total never changes).
  int64_t step_stream_start(int32_t step);
  WorkloadSetup setup_;

 private:
  int32_t layout_step_ = -1;
  std::vector<int64_t> layout_;
  std::vector<int64_t> step_start_;  // step_start_[s] = step_stream_start(s), filled on demand
  std::vector<int64_t> scratch_;
};

using WorkloadFactory =
    std::function<std::unique_ptr<Workload>(const WorkloadSetup&, ComponentArgs&)>;
using WorkloadRegistry = Registry<WorkloadFactory>;

// Builds a registered workload and rejects knobs it does not know. Throws InputError.
std::unique_ptr<Workload> make_workload(const std::string& name, const WorkloadSetup& setup,
                                        const std::map<std::string, std::string>& args);

}  // namespace moe
