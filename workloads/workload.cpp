#include "workloads/workload.hpp"

#include "harness/core/error.hpp"

namespace moe {

void Workload::rank_layout(int32_t, std::vector<int64_t>& first_token_of_rank) {
  first_token_of_rank.resize(static_cast<size_t>(setup_.ep_size) + 1);
  for (int32_t r = 0; r <= setup_.ep_size; ++r) first_token_of_rank[r] = r * setup_.tokens_per_rank;
}

void Workload::generate_ranks(int32_t step, int32_t layer, int32_t first_rank, int32_t num_ranks,
                              TokenBatch& out) {
  if (first_rank < 0 || num_ranks < 1 || first_rank + num_ranks > setup_.ep_size)
    fail("generate_ranks: ranks [" + std::to_string(first_rank) + ", " +
         std::to_string(first_rank + num_ranks) + ") outside the EP size " +
         std::to_string(setup_.ep_size));
  const std::vector<int64_t>& lay = layout(step);
  const int64_t first = lay[first_rank];
  generate(step, layer, first, lay[first_rank + num_ranks] - first, out);
  out.first_rank = first_rank;
  out.rank_offsets.resize(static_cast<size_t>(num_ranks) + 1);
  for (int32_t i = 0; i <= num_ranks; ++i) out.rank_offsets[i] = lay[first_rank + i] - first;
}

const std::vector<int64_t>& Workload::layout(int32_t step) {
  if (step != layout_step_) {
    rank_layout(step, layout_);
    layout_step_ = step;
  }
  return layout_;
}

int64_t Workload::step_stream_start(int32_t step) {
  if (step_start_.empty()) step_start_.push_back(0);
  while (static_cast<int32_t>(step_start_.size()) <= step) {
    const auto s = static_cast<int32_t>(step_start_.size()) - 1;
    rank_layout(s, scratch_);
    step_start_.push_back(step_start_.back() + scratch_.back());
  }
  return step_start_[static_cast<size_t>(step)];
}

void Workload::generate(int32_t step, int32_t layer, int64_t first_token, int64_t num_tokens,
                        TokenBatch& out) {
  out.step = step;
  out.layer = layer;
  out.num_experts = setup_.num_experts;
  out.num_tokens = num_tokens;
  out.first_token = first_token;
  const std::vector<int64_t>& lay = layout(step);
  out.global_tokens = lay.back();
  // Uniform layouts keep the tokens_per_rank shortcut; ragged ones are described by rank_offsets
  // (generate_ranks), so a batch made by generate() alone is one rank.
  bool uniform = true;
  for (size_t r = 0; r < lay.size() && uniform; ++r)
    uniform = lay[r] == static_cast<int64_t>(r) * setup_.tokens_per_rank;
  out.tokens_per_rank = uniform ? setup_.tokens_per_rank : 0;
  const int64_t stream_start = step_stream_start(step);
  out.logits.resize(static_cast<size_t>(num_tokens) * setup_.num_experts);
  out.sequence.resize(static_cast<size_t>(num_tokens));
  out.position.resize(static_cast<size_t>(num_tokens));
  // Tokens of consecutive steps continue one packed stream of sequences of seq_len tokens.
  for (int64_t t = 0; t < num_tokens; ++t) {
    const int64_t stream = stream_start + first_token + t;
    out.sequence[t] = stream / setup_.seq_len;
    out.position[t] = static_cast<int32_t>(stream % setup_.seq_len);
  }
  out.rank_offsets.clear();
  out.first_rank = 0;
  out.full_logits = true;
  out.tail_model.clear();
  out.has_sequences = true;
  out.recorded_k = 0;
  out.recorded_variable_k = false;
  out.recorded_expert.clear();
  out.recorded_weight.clear();
  out.domain.clear();
  out.domain_experts.clear();
  out.experts_per_domain = 0;
  fill_logits(out);
}

std::unique_ptr<Workload> make_workload(const std::string& name, const WorkloadSetup& setup,
                                        const std::map<std::string, std::string>& args) {
  const auto* entry = WorkloadRegistry::instance().find(name);
  if (!entry)
    throw InputError("unknown workload '" + name +
                     "' (known: " + join(WorkloadRegistry::instance().names()) + ")");
  ComponentArgs component_args("workload-arg", name, args);
  auto w = entry->factory(setup, component_args);
  component_args.reject_unknown();
  return w;
}

}  // namespace moe
