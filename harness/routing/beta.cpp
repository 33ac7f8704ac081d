// beta / Pi / anticipatory routing ("Affinity is not enough", Wong, arXiv 2605.00604),
// ROUTERS.md §5.
//
// Gate: the logits-only replay of the scalar-beta leaky integrator (exact for a scalar beta, §5):
//   u_t = beta * u_{t-1} + z_t, u reset (u_t = z_t) at each sequence start,
// then softmax top-k of u_t with the selection and weight rules of softmax_topk (ties to the lower
// index; weights = softmax over the k selected scores, or over all E with renormalize=false).
// A token starts a sequence when batch.position == 0 or its sequence id differs from the previous
// token's (the previous token may live on another process or in the previous step).
//
// Knobs (defaults):
//   beta=0.9         decay in [0, 1). beta=0 gives exactly softmax_topk's plan.
//   lookahead=false  the oracle of §5 ("routing on x_{t+1}"): token t is routed on z_{t+1} of
//                    the same sequence instead of u_t; the last token of a sequence uses its own
//                    z_t. [pick] The oracle replaces the integrator (beta is not applied; passing
//                    beta together with lookahead=true is an error). [pick] The last token of a
//                    step's whole EP group uses its own z_t when its sequence continues into the
//                    next step (the replay does not see the next step's logits): one token per
//                    step and layer.
//   precision=false  Pi weighting: the gate is softmax(s ⊙ Pi) on the routing score s (u_t, or
//                    z_{t+1} with lookahead), Pi_i = 1/(v_i + pi_eps), v_i <- pi_decay * v_i +
//                    (1 - pi_decay) * MSE_i once per step per layer (in end_step, so it acts from
//                    the next step on), v_i starts at pi_v0. Defaults pi_decay=0.95,
//                    pi_eps=1e-4, pi_v0=0.5 (the README / ablation value).
//                    [pick] Synthetic reliability signal (traces carry no per-expert error):
//                    MSE_i = m_i / n_i, where n_i = the number of consecutive same-sequence token
//                    pairs (t, t+1) of this step and layer, group-wide, whose token t has first
//                    choice i, and m_i = how many of those have a different first choice at t+1
//                    (expert i's "switch rate"). Integer counts, so deterministic; an expert with
//                    n_i = 0 keeps its v_i.
//   renormalize=true as softmax_topk.
//
// Distribution. The recurrence is linear, so each EP rank runs it from a zero state over its own
// tokens (partial state p_t), and the state entering EP rank r is folded in EP-rank order from
// every rank's (final partial state, contains-a-sequence-start flag) pairs, gathered with one
// MPI_Allgather: in_{r+1} = has_start_r ? P_r : P_r + beta^n * in_r. Tokens of rank r before its
// first sequence start then get u_t = p_t + beta^(j+1) * in_r (j = offset in the rank; powers by
// repeated float multiplication, flushed to 0 below 1e-30). Everything is defined per EP rank, so
// it is bit-identical for any split of the EP ranks over processes. The state after the last EP
// rank is kept per layer and enters the next step (the synthetic stream continues across steps);
// it is used only when the next route() of that layer is for step + 1.
// The lookahead oracle needs the first row of the next process: it travels in the same gather.
//
// Figures (per step and layer, group-wide):
//   churn   fraction of consecutive same-sequence token pairs (t, t+1) of this step (both tokens in
//           this step's group, across EP-rank and process boundaries) whose first choices differ;
//           integer counts; NaN when there is no pair.
//   beta    the decay applied (0 with lookahead, whose oracle does not integrate).
//   pi_min, pi_max  (precision=true only) the smallest and largest Pi_i used by this route().
// The transition figures (acc_at_transition, ...) of labelled workloads come from the harness.
//
// Needs: full logits and real sequences (missing_input).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "harness/core/error.hpp"
#include "harness/routing/router.hpp"
#include "harness/routing/topk_rows.hpp"

namespace moe {
namespace {

// What the fold and the sequence-boundary tests need to know about one EP rank's tokens.
struct RankRecord {
  int64_t first_seq = 0;
  int64_t last_seq = 0;
  int64_t tokens = 0;  // tokens of this rank (ranks may differ: traces split by sequence)
  int32_t first_pos = 0;
  int32_t internal_start = 0;  // a sequence starts at a token of this rank other than its first
};

class Beta final : public Router {
 public:
  Beta(const RouterSetup& setup, ComponentArgs& args) : k_(setup.top_k) {
    const bool beta_given = args.values().count("beta") > 0;
    beta_ = args.get_double("beta", 0.9);
    lookahead_ = args.get_bool("lookahead", false);
    precision_ = args.get_bool("precision", false);
    pi_decay_ = args.get_double("pi_decay", 0.95);
    pi_eps_ = args.get_double("pi_eps", 1e-4);
    pi_v0_ = args.get_double("pi_v0", 0.5);
    renormalize_ = args.get_bool("renormalize", true);
    if (!(beta_ >= 0.0 && beta_ < 1.0))
      throw InputError("router-arg beta.beta: must be in [0, 1), got " +
                       args.get_string("beta", ""));
    if (lookahead_ && beta_given)
      throw InputError(
          "router-arg beta.beta: not used with lookahead=true (the oracle routes token t on "
          "z_{t+1} alone)");
    if (!(pi_decay_ >= 0.0 && pi_decay_ < 1.0))
      throw InputError("router-arg beta.pi_decay: must be in [0, 1)");
    if (!(pi_eps_ > 0.0)) throw InputError("router-arg beta.pi_eps: must be > 0");
    if (!(pi_v0_ >= 0.0)) throw InputError("router-arg beta.pi_v0: must be >= 0");
    if (k_ < 1 || k_ > setup.num_experts)
      throw InputError("router beta: top_k must be in [1, experts]");
    layers_.resize(static_cast<size_t>(std::max(1, setup.num_layers)));
  }

  std::string missing_input(const TokenBatch& b) const override {
    if (!b.full_logits)
      return "full router logits (the integrator runs on all E logits; the source has top-k "
             "assignments only)";
    if (!b.has_sequences)
      return "sequence ids and positions (the integrator resets at sequence starts; the source has "
             "none)";
    return "";
  }

  std::vector<std::string> figure_names() const override {
    std::vector<std::string> n{"churn", "beta"};
    if (precision_) {
      n.push_back("pi_min");
      n.push_back("pi_max");
    }
    return n;
  }
  std::vector<double> figures() const override { return figures_; }

  void route(const TokenBatch& b, const Comm& group, RoutingPlan& plan) override;

  // softmax over all E of the gate scores the last route() ranked by (u_t, z_{t+1}, times Pi).
  bool has_full_distribution() const override { return true; }
  void full_scores(const TokenBatch& b, int64_t t, float* scores) const override {
    const float* s = (last_transform_ ? scores_.data() : b.logits.data()) + t * b.num_experts;
    std::copy(s, s + b.num_experts, scores);
  }

  void end_step(const Comm&) override {
    if (!precision_) return;
    for (auto& st : layers_) {
      if (st.n.empty()) continue;
      for (size_t e = 0; e < st.v.size(); ++e)
        if (st.n[e] > 0)
          st.v[e] = pi_decay_ * st.v[e] +
                    (1.0 - pi_decay_) * static_cast<double>(st.m[e]) / static_cast<double>(st.n[e]);
      std::fill(st.n.begin(), st.n.end(), 0);
      std::fill(st.m.begin(), st.m.end(), 0);
    }
  }

  void save_state(StateWriter& out) const override {
    out.put(static_cast<uint64_t>(layers_.size()));
    for (const auto& st : layers_) {
      out.put_vec(st.carry_u);
      out.put(st.carry_seq);
      out.put(st.carry_step);
      out.put_vec(st.v);
      out.put_vec(st.n);
      out.put_vec(st.m);
    }
  }
  void load_state(StateReader& in) override {
    const uint64_t n = in.get<uint64_t>();
    if (n > (uint64_t{1} << 20)) in.bad("layer count");
    layers_.resize(static_cast<size_t>(n));
    for (auto& st : layers_) {
      in.get_vec(st.carry_u);
      st.carry_seq = in.get<int64_t>();
      st.carry_step = in.get<int32_t>();
      in.get_vec(st.v);
      in.get_vec(st.n);
      in.get_vec(st.m);
    }
  }

 private:
  struct LayerState {
    std::vector<float> carry_u;  // [E] state after the last token of the group at step carry_step
    int64_t carry_seq = -1;
    int32_t carry_step = -1;
    std::vector<double> v;      // [E] Pi's running error
    std::vector<int64_t> n, m;  // [E] this step's reliability counts (precision)
  };

  LayerState& layer_state(int32_t layer, int32_t E) {
    if (layer >= static_cast<int32_t>(layers_.size()))
      layers_.resize(static_cast<size_t>(layer) + 1);
    LayerState& st = layers_[layer];
    if (static_cast<int32_t>(st.carry_u.size()) != E) {
      st.carry_u.assign(E, 0.f);
      st.carry_step = -1;
      st.v.assign(E, pi_v0_);
      st.n.assign(E, 0);
      st.m.assign(E, 0);
    }
    return st;
  }

  int32_t k_;
  double beta_ = 0.9;
  bool lookahead_ = false;
  bool precision_ = false;
  double pi_decay_ = 0.95, pi_eps_ = 1e-4, pi_v0_ = 0.5;
  bool renormalize_ = true;
  std::vector<LayerState> layers_;
  std::vector<double> figures_;
  bool last_transform_ = false;  // the last route() ranked by scores_ (else by the logits)
  // Scratch, reused across calls.
  std::vector<float> scores_, powers_, in_, next_, pi_, first_rows_, parts_;
  std::vector<RankRecord> records_;
  std::vector<int64_t> first_start_;
  std::vector<char> blob_, all_;
  std::vector<int32_t> first_choice_;
  std::vector<int64_t> counts_;
};

void Beta::route(const TokenBatch& b, const Comm& group, RoutingPlan& plan) {
  const int64_t T = b.num_tokens;
  const int32_t E = b.num_experts;
  const int32_t k = k_;
  LayerState& st = layer_state(b.layer, E);
  // EP ranks of this batch (every rank holds >= 1 token; a hand-built batch is one rank).
  const int32_t ranks_here = b.ranks_here();
  int64_t longest_rank = 1;
  for (int32_t r = 0; r < ranks_here; ++r) {
    if (b.rank_end(r) <= b.rank_begin(r))
      fail("beta: EP rank " + std::to_string(b.rank_base() + r) + " has no tokens");
    longest_rank = std::max(longest_rank, b.rank_end(r) - b.rank_begin(r));
  }
  const int32_t P = group.size();
  const int64_t R = static_cast<int64_t>(ranks_here) * P;
  const int64_t first_global_rank = static_cast<int64_t>(group.rank()) * ranks_here;
  const bool integrate = !lookahead_ && beta_ > 0.0;
  const bool transform = integrate || lookahead_ || precision_;
  const float beta = static_cast<float>(beta_);
  const float* z = b.logits.data();
  auto zrow = [&](int64_t t) { return z + t * E; };
  if (transform) scores_.resize(static_cast<size_t>(T) * E);
  float* s = scores_.data();
  auto srow = [&](int64_t t) { return s + t * E; };
  auto continues = [&](int64_t t) {  // token t continues token t-1's sequence (both local, t >= 1)
    return b.position[t] != 0 && b.sequence[t] == b.sequence[t - 1];
  };

  // 1. Per local EP rank: its record and (integrate) the partial recurrence from a zero state.
  std::vector<RankRecord> local(static_cast<size_t>(ranks_here));
  first_start_.assign(static_cast<size_t>(ranks_here), 0);
  for (int32_t r = 0; r < ranks_here; ++r) {
    const int64_t t0 = b.rank_begin(r), t1 = b.rank_end(r);
    RankRecord& rec = local[r];
    rec.tokens = t1 - t0;
    rec.first_seq = b.sequence[t0];
    rec.last_seq = b.sequence[t1 - 1];
    rec.first_pos = b.position[t0];
    first_start_[r] = t1;
    for (int64_t t = t0 + 1; t < t1; ++t)
      if (!continues(t)) {
        rec.internal_start = 1;
        first_start_[r] = t;
        break;
      }
    if (!integrate) continue;
    std::memcpy(srow(t0), zrow(t0), sizeof(float) * E);
    for (int64_t t = t0 + 1; t < t1; ++t) {
      float* u = srow(t);
      const float* zt = zrow(t);
      if (!continues(t)) {
        std::memcpy(u, zt, sizeof(float) * E);
        continue;
      }
      const float* prev = srow(t - 1);
      for (int32_t e = 0; e < E; ++e) u[e] = beta * prev[e] + zt[e];
    }
  }

  // 2. One gather: every EP rank's record, (integrate) its final partial state, (lookahead) this
  // process's first row.
  const size_t rec_bytes = sizeof(RankRecord) * ranks_here;
  const size_t part_bytes = integrate ? sizeof(float) * E * ranks_here : 0;
  const size_t row_bytes = lookahead_ ? sizeof(float) * E : 0;
  const size_t blob_size = rec_bytes + part_bytes + row_bytes;
  blob_.resize(blob_size);
  std::memcpy(blob_.data(), local.data(), rec_bytes);
  if (integrate)
    for (int32_t r = 0; r < ranks_here; ++r)
      std::memcpy(blob_.data() + rec_bytes + sizeof(float) * E * r, srow(b.rank_end(r) - 1),
                  sizeof(float) * E);
  if (lookahead_) std::memcpy(blob_.data() + rec_bytes + part_bytes, zrow(0), row_bytes);
  all_.resize(blob_size * P);
  if (P == 1) {
    std::memcpy(all_.data(), blob_.data(), blob_size);
  } else {
    MOE_MPI(MPI_Allgather(blob_.data(), static_cast<int>(blob_size), MPI_BYTE, all_.data(),
                          static_cast<int>(blob_size), MPI_BYTE, group.raw()));
  }
  records_.resize(static_cast<size_t>(R));
  for (int32_t q = 0; q < P; ++q)
    std::memcpy(records_.data() + static_cast<size_t>(q) * ranks_here, all_.data() + blob_size * q,
                rec_bytes);
  if (integrate) {
    parts_.resize(static_cast<size_t>(R) * E);
    for (int32_t q = 0; q < P; ++q)
      std::memcpy(parts_.data() + static_cast<size_t>(q) * ranks_here * E,
                  all_.data() + blob_size * q + rec_bytes, part_bytes);
  }
  auto partial_of = [&](int64_t g) {
    return parts_.data() + g * E;
  };  // final partial state of global EP rank g
  // Whether the first token of global EP rank g continues the sequence of the token before it.
  auto rank_continues = [&](int64_t g) {
    const RankRecord& rec = records_[g];
    if (rec.first_pos == 0) return false;
    if (g == 0) return !lookahead_ && st.carry_step == b.step - 1 && rec.first_seq == st.carry_seq;
    return rec.first_seq == records_[g - 1].last_seq;
  };

  // 3. Fold the states in EP-rank order (the same arithmetic on every process), then correct the
  // tokens of each local rank that come before its first sequence start.
  if (integrate) {
    if (static_cast<int64_t>(powers_.size()) < longest_rank || powers_.empty() ||
        powers_[0] != beta) {
      powers_.resize(static_cast<size_t>(longest_rank));
      float p = 1.f;
      for (int64_t j = 0; j < longest_rank; ++j) {
        p *= beta;
        if (p < 1e-30f) p = 0.f;
        powers_[j] = p;
      }
    }
    in_.assign(static_cast<size_t>(E) * ranks_here, 0.f);  // state entering each local rank
    std::vector<float> state(st.carry_u);
    next_.resize(E);
    for (int64_t g = 0; g < R; ++g) {
      const bool cont = rank_continues(g);
      if (!cont) std::fill(state.begin(), state.end(), 0.f);
      if (g >= first_global_rank && g < first_global_rank + ranks_here)
        std::copy(state.begin(), state.end(), in_.begin() + (g - first_global_rank) * E);
      const float* part = partial_of(g);
      if (records_[g].internal_start || !cont) {
        std::copy(part, part + E, state.begin());
      } else {
        // beta^n for this rank's n tokens (ranks of other processes may be longer than ours).
        float decay = 1.f;
        const int64_t n = records_[g].tokens;
        if (n <= static_cast<int64_t>(powers_.size())) {
          decay = powers_[n - 1];
        } else {
          for (int64_t j = 0; j < n && decay != 0.f; ++j) {
            decay *= beta;
            if (decay < 1e-30f) decay = 0.f;
          }
        }
        for (int32_t e = 0; e < E; ++e) next_[e] = part[e] + decay * state[e];
        std::copy(next_.begin(), next_.end(), state.begin());
      }
    }
    st.carry_u = state;
    for (int32_t r = 0; r < ranks_here; ++r) {
      if (!rank_continues(first_global_rank + r)) continue;
      const float* in = in_.data() + static_cast<size_t>(r) * E;
      const int64_t t0 = b.rank_begin(r);
      for (int64_t t = t0; t < first_start_[r]; ++t) {
        const float w = powers_[t - t0];
        if (w == 0.f) break;
        float* u = srow(t);
        for (int32_t e = 0; e < E; ++e) u[e] = u[e] + w * in[e];
      }
    }
  } else if (lookahead_) {
    for (int64_t t = 0; t + 1 < T; ++t)
      std::memcpy(srow(t), continues(t + 1) ? zrow(t + 1) : zrow(t), sizeof(float) * E);
    const float* last = zrow(T - 1);
    if (group.rank() + 1 < P) {
      const int64_t g = static_cast<int64_t>(group.rank() + 1) * ranks_here;
      const RankRecord& rec = records_[g];
      if (rec.first_pos != 0 && rec.first_seq == b.sequence[T - 1]) {
        first_rows_.resize(E);
        std::memcpy(first_rows_.data(),
                    all_.data() + blob_size * (group.rank() + 1) + rec_bytes + part_bytes,
                    row_bytes);
        last = first_rows_.data();
      }
    }
    std::memcpy(srow(T - 1), last, sizeof(float) * E);
  } else if (precision_) {
    std::memcpy(s, z, sizeof(float) * T * E);
  }
  st.carry_seq = records_[R - 1].last_seq;
  st.carry_step = b.step;

  // 4. Pi weighting, then softmax top-k on the scores.
  if (precision_) {
    pi_.resize(E);
    for (int32_t e = 0; e < E; ++e) pi_[e] = static_cast<float>(1.0 / (st.v[e] + pi_eps_));
    for (int64_t t = 0; t < T; ++t) {
      float* u = srow(t);
      for (int32_t e = 0; e < E; ++e) u[e] *= pi_[e];
    }
  }
  last_transform_ = transform;
  plan.reset(T, E, T * k);
  plan.expert.resize(static_cast<size_t>(T) * k);
  plan.weight.resize(static_cast<size_t>(T) * k);
  topk_rows(transform ? s : z, T, E, k,
            renormalize_ ? TopKWeights::softmax_topk : TopKWeights::softmax_full,
            plan.expert.data(), plan.weight.data());
  for (int64_t t = 0; t < T; ++t) plan.offsets[t + 1] = (t + 1) * k;

  // 5. Churn and the reliability counts: local pairs, then the pairs across process boundaries
  // from each process's first and last first choice (summed into slots), counted the same way on
  // every process.
  const int32_t* ex = plan.expert.data();
  const size_t off_n = 2, off_m = off_n + (precision_ ? E : 0),
               off_slots = off_m + (precision_ ? E : 0);
  counts_.assign(off_slots + 2 * static_cast<size_t>(P), 0);
  for (int64_t t = 0; t + 1 < T; ++t) {
    if (!continues(t + 1)) continue;
    const int32_t a = ex[t * k], c = ex[(t + 1) * k];
    counts_[1] += 1;
    counts_[0] += a != c;
    if (precision_) {
      counts_[off_n + a] += 1;
      counts_[off_m + a] += a != c;
    }
  }
  counts_[off_slots + 2 * group.rank()] = ex[0] + 1;
  counts_[off_slots + 2 * group.rank() + 1] = ex[(T - 1) * k] + 1;
  group.sum(counts_);
  for (int32_t q = 0; q + 1 < P; ++q) {
    const int64_t g = static_cast<int64_t>(q + 1) * ranks_here;
    if (records_[g].first_pos == 0 || records_[g].first_seq != records_[g - 1].last_seq) continue;
    const int64_t a = counts_[off_slots + 2 * q + 1] - 1, c = counts_[off_slots + 2 * q + 2] - 1;
    counts_[1] += 1;
    counts_[0] += a != c;
    if (precision_) {
      counts_[off_n + a] += 1;
      counts_[off_m + a] += a != c;
    }
  }
  if (precision_)
    for (int32_t e = 0; e < E; ++e) {
      st.n[e] += counts_[off_n + e];
      st.m[e] += counts_[off_m + e];
    }
  figures_.clear();
  figures_.push_back(counts_[1] > 0
                         ? static_cast<double>(counts_[0]) / static_cast<double>(counts_[1])
                         : std::numeric_limits<double>::quiet_NaN());
  figures_.push_back(lookahead_ ? 0.0 : beta_);
  if (precision_) {
    figures_.push_back(*std::min_element(pi_.begin(), pi_.end()));
    figures_.push_back(*std::max_element(pi_.begin(), pi_.end()));
  }
}

const RouterRegistry::Registrar reg(
    "beta",
    "leaky integrator u_t = beta*u_{t-1} + z_t per sequence, then softmax top-k (beta=0.9, "
    "lookahead=false: route t on z_{t+1}, "
    "precision=false: Pi weighting, pi_decay=0.95, pi_eps=1e-4, pi_v0=0.5, renormalize=true)",
    [](const RouterSetup& s, ComponentArgs& a) -> std::unique_ptr<Router> {
      return std::make_unique<Beta>(s, a);
    });

}  // namespace
}  // namespace moe
