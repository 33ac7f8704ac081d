// trace: replays a moebench trace file (workloads/TRACE_FORMAT.md, "Replay").
//
// Run step s replays trace step s mod S, run layer l trace layer l mod L. Each step's tokens are
// split over the R EP ranks by whole sequences (or in contiguous blocks: trace.split=block, or when
// the trace has no sequences); the split depends on R only. Each process reads only its ranks'
// rows of each (step, layer) with parallel-HDF5 (MPI-IO) hyperslab reads, so a trace larger than
// memory streams. Logit traces give logits; assignment traces give the recorded choices (for the
// `recorded` router) and, when another router needs them, reconstructed logits
// (batch.full_logits = false; routers that need the unrecorded part refuse), or with --trace-tail
// logits completed by a tail model (workloads/trace_tail.hpp; batch.tail_model names it).
//
// Labels: with a domain -> experts map (the trace's `domain_experts` attribute, or
// domain_experts=0=0;1=2+3, which wins) and /tokens/domain, every batch carries each token's domain
// and the map (the same for every layer), so every router gets the transition figures.
//
// Count-only traces (kind counts, TRACE_FORMAT.md "Count-only traces"): each assignment of a step
// becomes a token with one recorded expert (weight 1). Attribution `uniform` (--count-sources): the
// step's assignments, ordered by expert, are dealt to the EP ranks round-robin (assignment j to
// rank j mod R), so each rank sends floor or ceil of demand/R to each expert; a function of R only.
// batch.count_only tells the driver that only `recorded` can route it.
//
// Knobs: split=sequence|block (default sequence), domain_experts=MAP (default: the trace's).
#include <algorithm>
#include <memory>

#include "harness/core/error.hpp"
#include "workloads/trace_file.hpp"
#include "workloads/trace_tail.hpp"
#include "workloads/workload.hpp"

namespace moe {
namespace {

class TraceWorkload final : public Workload {
 public:
  TraceWorkload(const WorkloadSetup& setup, ComponentArgs& args) : Workload(setup) {
    const std::string split = args.get_string("split", "sequence");
    const std::string map_arg = args.get_string("domain_experts", "");
    if (split != "sequence" && split != "block")
      throw InputError("--workload-arg trace.split=" + split +
                       ": unknown value (known: sequence, block)");
    if (setup.trace_file.empty()) throw InputError("--workload trace: needs --trace FILE");
    reader_ = std::make_unique<TraceReader>(setup.trace_file, setup.comm, true);
    const TraceHeader& h = reader_->header();
    by_sequence_ = split == "sequence" && h.has_sequences && !h.counts();
    if (h.num_experts != setup.num_experts)
      throw InputError("trace " + setup.trace_file +
                       ": num_experts = " + std::to_string(h.num_experts) + " but --experts " +
                       std::to_string(setup.num_experts));
    // The domain -> experts map: every label of the trace must be in it (checked once, here).
    const std::string map_text = !map_arg.empty() ? map_arg : h.domain_experts;
    if (!map_text.empty()) {
      const std::string what = !map_arg.empty()
                                   ? "--workload-arg trace.domain_experts"
                                   : "trace " + setup.trace_file + ": attribute domain_experts";
      const auto map = parse_domain_experts(map_text, h.num_experts, what);
      if (!h.has_domain)
        throw InputError(what + ": trace " + setup.trace_file +
                         " has no domain labels (/tokens/domain; import them with --field "
                         "domain=KEY or --token-table)");
      size_t m = 0;
      for (const auto& experts : map) m = std::max(m, experts.size());
      experts_per_domain_ = static_cast<int32_t>(m);
      domain_experts_.assign(map.size() * m, -1);  // [domains][m], -1 pads shorter lists
      for (size_t d = 0; d < map.size(); ++d)
        std::copy(map[d].begin(), map[d].end(), domain_experts_.begin() + d * m);
      std::vector<int32_t> dom;
      constexpr int64_t kBlock = 1 << 16;
      for (int64_t first = 0; first < h.num_tokens; first += kBlock) {
        reader_->read_domains(first, std::min(kBlock, h.num_tokens - first), dom);
        for (size_t i = 0; i < dom.size(); ++i)
          if (dom[i] < 0 || static_cast<size_t>(dom[i]) >= map.size() || map[dom[i]].empty())
            throw InputError("trace " + setup.trace_file + ": /tokens/domain row " +
                             std::to_string(first + static_cast<int64_t>(i)) + ": domain " +
                             std::to_string(dom[i]) + " is not in the domain -> experts map " +
                             map_text + " (" + what + ")");
      }
    }
    // Every step's split, computed once before the run from the sequence ids alone (the same on
    // every process): every EP rank must get a token in every step.
    layouts_.resize(static_cast<size_t>(h.num_steps));
    for (int32_t s = 0; s < h.num_steps; ++s) split_step(s, layouts_[static_cast<size_t>(s)]);
    if (setup.trace_tail != "none")
      tail_ = std::make_unique<TailCompleter>(
          *reader_, TailSpec{setup.trace_tail, setup.tail_prior, setup.tail_noise, setup.seed});
  }

  std::string tail_params() const override { return tail_ ? tail_->describe() : ""; }

  void rank_layout(int32_t step, std::vector<int64_t>& first) override {
    first = layouts_[static_cast<size_t>(step % reader_->header().num_steps)];
  }

  void generate(int32_t step, int32_t layer, int64_t first_token, int64_t num_tokens,
                TokenBatch& out) override {
    const TraceHeader& h = reader_->header();
    const int32_t s = step % h.num_steps;
    const int32_t tl = layer % h.num_layers;
    const int64_t base = h.step_offsets[s], N = h.step_offsets[s + 1] - base;
    if (first_token < 0 || num_tokens < 0 || first_token + num_tokens > N)
      fail("trace: tokens outside step " + std::to_string(s));
    const int32_t E = h.num_experts;
    out.count_only = h.counts();
    if (h.counts()) return generate_counts(step, layer, s, tl, first_token, num_tokens, out);
    out.step = step;
    out.layer = layer;
    out.num_experts = E;
    out.num_tokens = num_tokens;
    out.first_token = first_token;
    out.global_tokens = N;
    out.tokens_per_rank = 0;
    out.rank_offsets.clear();
    out.first_rank = 0;
    out.has_sequences = h.has_sequences;
    out.domain.clear();
    out.domain_experts.clear();
    out.experts_per_domain = 0;
    if (meta_step_ != step || meta_first_ != first_token || meta_n_ != num_tokens) {
      reader_->read_tokens(base + first_token, num_tokens, tokens_, false);
      if (experts_per_domain_ > 0)
        reader_->read_domains(base + first_token, num_tokens, tokens_.domain);
      meta_step_ = step;
      meta_first_ = first_token;
      meta_n_ = num_tokens;
    }
    out.sequence = tokens_.sequence;
    out.position = tokens_.position;
    if (experts_per_domain_ > 0) {
      out.domain = tokens_.domain;
      out.experts_per_domain = experts_per_domain_;
      out.domain_experts = domain_experts_;
    }
    if (!h.has_sequences)  // one stream: positions index it; sequence ids unknown (-1)
      for (int64_t t = 0; t < num_tokens; ++t) out.sequence[t] = -1;
    if (h.logits()) {
      out.full_logits = true;
      out.tail_model.clear();
      out.recorded_k = 0;
      out.recorded_variable_k = false;
      out.recorded_expert.clear();
      out.recorded_weight.clear();
      out.logits.resize(static_cast<size_t>(num_tokens) * E);
      reader_->read_logits(tl, base + first_token, num_tokens, out.logits.data());
      return;
    }
    const int32_t k = h.top_k;
    out.recorded_k = k;
    out.recorded_variable_k = h.variable_k;
    out.recorded_expert.resize(static_cast<size_t>(num_tokens) * k);
    out.recorded_weight.resize(static_cast<size_t>(num_tokens) * k);
    reader_->read_assignments(tl, base + first_token, num_tokens, out.recorded_expert.data(),
                              out.recorded_weight.data());
    out.full_logits = false;
    out.tail_model.clear();
    if (!setup_.need_logits) {
      out.logits.clear();
      return;
    }
    out.logits.resize(static_cast<size_t>(num_tokens) * E);
    if (tail_) {  // every router may run: the tail is modelled, and the batch says by what
      out.full_logits = true;
      out.tail_model = tail_->spec().model;
      for (int64_t t = 0; t < num_tokens; ++t)
        tail_->complete(tl, base + first_token + t, out.recorded_expert.data() + t * k,
                        out.recorded_weight.data() + t * k, out.logits.data() + t * E);
      return;
    }
    const bool probabilities = h.weights_are == "probabilities";
    for (int64_t t = 0; t < num_tokens; ++t)
      reconstruct_logits(out.recorded_expert.data() + t * k, out.recorded_weight.data() + t * k, k,
                         E, probabilities, out.logits.data() + t * E);
  }

 protected:
  void fill_logits(TokenBatch&) override { fail("trace: fill_logits is not used"); }

 private:
  // Count-only trace: the batch's tokens are assignments dealt round-robin (class comment).
  void generate_counts(int32_t step, int32_t layer, int32_t s, int32_t tl, int64_t first_token,
                       int64_t num_tokens, TokenBatch& out) {
    const TraceHeader& h = reader_->header();
    const int32_t E = h.num_experts, R = setup_.ep_size;
    if (counts_step_ != s) {
      reader_->read_counts(s, 1, counts_);
      counts_step_ = s;
    }
    prefix_.assign(static_cast<size_t>(E) + 1, 0);  // first assignment of each expert in the step
    const int64_t* c = counts_.data() + static_cast<size_t>(tl) * E;
    for (int32_t e = 0; e < E; ++e) prefix_[e + 1] = prefix_[e] + c[e];
    const std::vector<int64_t>& first = layouts_[static_cast<size_t>(s)];
    out.step = step;
    out.layer = layer;
    out.num_experts = E;
    out.num_tokens = num_tokens;
    out.first_token = first_token;
    out.global_tokens = h.step_offsets[s + 1] - h.step_offsets[s];
    out.tokens_per_rank = 0;
    out.rank_offsets.clear();
    out.first_rank = 0;
    out.has_sequences = false;
    out.full_logits = false;
    out.logits.clear();
    out.domain.clear();
    out.domain_experts.clear();
    out.experts_per_domain = 0;
    out.recorded_k = 1;
    out.recorded_variable_k = false;
    out.sequence.assign(static_cast<size_t>(num_tokens), -1);
    out.position.resize(static_cast<size_t>(num_tokens));
    out.recorded_expert.resize(static_cast<size_t>(num_tokens));
    out.recorded_weight.assign(static_cast<size_t>(num_tokens), 1.f);
    int32_t r = static_cast<int32_t>(std::upper_bound(first.begin(), first.end(), first_token) -
                                     first.begin()) -
                1;
    for (int64_t t = 0; t < num_tokens; ++t) {
      const int64_t g = first_token + t;
      while (g >= first[static_cast<size_t>(r) + 1]) ++r;
      const int64_t j =
          r + (g - first[static_cast<size_t>(r)]) * R;  // the assignment this token is
      out.position[t] = static_cast<int32_t>(j);
      out.recorded_expert[t] =
          static_cast<int32_t>(std::upper_bound(prefix_.begin(), prefix_.end(), j) -
                               prefix_.begin()) -
          1;
    }
  }

  // The split of trace step s over the EP ranks (TRACE_FORMAT.md, Replay).
  void split_step(int32_t s, std::vector<int64_t>& first) {
    const TraceHeader& h = reader_->header();
    const int64_t base = h.step_offsets[s], N = h.step_offsets[s + 1] - base;
    const int32_t R = setup_.ep_size;
    first.assign(static_cast<size_t>(R) + 1, N);
    first[0] = 0;
    if (!by_sequence_) {
      for (int32_t r = 0; r < R; ++r) first[r] = r * (N / R) + std::min<int64_t>(r, N % R);
    } else {
      // Rank r starts at the first sequence start at or after r*N/R (every process reads the
      // step's sequence ids, so every process computes the same split).
      std::vector<int64_t> seq;
      reader_->read_sequences(base, N, seq);
      int32_t r = 1;
      for (int64_t t = 0; t < N && r < R; ++t) {
        if (t > 0 && seq[t] == seq[t - 1]) continue;
        while (r < R && t * R >= r * N) first[r++] = t;
      }
    }
    for (int32_t r = 0; r < R; ++r)
      if (first[r + 1] <= first[r] && h.counts())
        throw InputError("trace " + setup_.trace_file + ": step " + std::to_string(s) + " counts " +
                         std::to_string(N) + " assignments for " + std::to_string(R) +
                         " EP ranks: rank " + std::to_string(r) +
                         " would route none (use fewer ranks)");
      else if (first[r + 1] <= first[r])
        throw InputError("trace " + setup_.trace_file + ": step " + std::to_string(s) + " has " +
                         std::to_string(N) + " tokens" +
                         (by_sequence_ ? " in too few sequences" : "") + " for " +
                         std::to_string(R) + " EP ranks: rank " + std::to_string(r) +
                         " would route none" +
                         (by_sequence_ ? " (use --workload-arg trace.split=block, or fewer ranks)"
                                       : " (use fewer ranks)"));
  }

  std::unique_ptr<TraceReader> reader_;
  std::unique_ptr<TailCompleter> tail_;
  std::vector<std::vector<int64_t>> layouts_;  // [trace step][R + 1]
  bool by_sequence_ = true;
  int32_t experts_per_domain_ = 0;       // > 0: labels and the map go into every batch
  std::vector<int32_t> domain_experts_;  // [domains][experts_per_domain_]
  TraceTokens tokens_;
  int32_t meta_step_ = -1;
  int32_t counts_step_ = -1;  // kind counts: the step whose counts_ [L, E] are loaded
  std::vector<int64_t> counts_, prefix_;
  int64_t meta_first_ = -1, meta_n_ = -1;
};

const WorkloadRegistry::Registrar reg(
    "trace",
    "replays a trace file (--trace FILE; workloads/TRACE_FORMAT.md), split over ranks by sequence",
    [](const WorkloadSetup& s, ComponentArgs& a) -> std::unique_ptr<Workload> {
      return std::make_unique<TraceWorkload>(s, a);
    });

}  // namespace
}  // namespace moe
