#pragma once
#include <algorithm>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace moe {

// The tokens one process routes for one (step, layer): a contiguous range of global token indices
// [first_token, first_token + num_tokens), owned by the virtual ranks this process hosts.
struct TokenBatch {
  int32_t step = 0;
  int32_t layer = 0;
  int32_t num_experts = 0;
  int64_t num_tokens = 0;
  int64_t first_token = 0;    // global index of token 0 of this batch
  int64_t global_tokens = 0;  // tokens in the whole EP group for this (step, layer)
  int64_t tokens_per_rank =
      0;  // uniform layouts: token t belongs to EP rank (first_token + t) / tokens_per_rank
  // The EP ranks this batch covers, in order: rank first_rank + i owns batch tokens
  // [rank_offsets[i], rank_offsets[i+1]). Empty: the uniform layout above (or one rank when
  // tokens_per_rank is 0). Traces split by sequence give ranks different token counts.
  int32_t first_rank = 0;
  std::vector<int64_t> rank_offsets;
  std::vector<float> logits;      // [num_tokens, num_experts], row-major
  std::vector<int64_t> sequence;  // [num_tokens] global sequence id
  std::vector<int32_t> position;  // [num_tokens] position inside the sequence
  // What the source knows (traces may lack some): routers check these before routing.
  bool full_logits = true;  // logits cover all experts (false: reconstructed from top-k)
  // An assignment trace whose unrecorded logits were completed (--trace-tail): the model name
  // (full_logits is then true, and recorded_* still say what the trace holds); "" otherwise.
  std::string tail_model;
  bool has_sequences = true;  // sequence/position are real (false: unknown)
  // Labelled workloads only (empty otherwise): each token's domain, and the experts each domain
  // favours at this layer, [domains][experts_per_domain].
  std::vector<int32_t> domain;
  int32_t experts_per_domain = 0;
  std::vector<int32_t> domain_experts;

  // Recorded choices of an assignment trace (empty otherwise): [num_tokens, recorded_k], first
  // choice first, -1 pads rows with fewer experts.
  int32_t recorded_k = 0;
  bool recorded_variable_k = false;  // some tokens recorded fewer than recorded_k experts
  std::vector<int32_t> recorded_expert;
  std::vector<float> recorded_weight;
  // A count-only trace (kind counts): the tokens are its assignments, one recorded expert each,
  // dealt to the EP ranks by the --count-sources attribution; only `recorded` routes them.
  bool count_only = false;

  int32_t ranks_here() const {
    if (!rank_offsets.empty()) return static_cast<int32_t>(rank_offsets.size()) - 1;
    if (tokens_per_rank > 0)
      return static_cast<int32_t>(
          std::max<int64_t>(1, (num_tokens + tokens_per_rank - 1) / tokens_per_rank));
    return 1;
  }
  // Batch-local token range of hosted rank i (0 <= i < ranks_here()).
  int64_t rank_begin(int32_t i) const {
    if (!rank_offsets.empty()) return rank_offsets[static_cast<size_t>(i)];
    return tokens_per_rank > 0 ? std::min<int64_t>(num_tokens, i * tokens_per_rank) : 0;
  }
  int64_t rank_end(int32_t i) const {
    return i + 1 >= ranks_here() ? num_tokens : rank_begin(i + 1);
  }
  // Global EP rank of hosted rank 0.
  int32_t rank_base() const {
    if (!rank_offsets.empty()) return first_rank;
    return tokens_per_rank > 0 ? static_cast<int32_t>(first_token / tokens_per_rank) : 0;
  }

  std::span<const float> row(int64_t t) const {
    return {logits.data() + t * num_experts, static_cast<size_t>(num_experts)};
  }
};

// Hosted-rank index of batch tokens visited in non-decreasing order: for (t...) r = cursor(t).
class RankCursor {
 public:
  explicit RankCursor(const TokenBatch& b) : b_(b), n_(b.ranks_here()), end_(b.rank_end(0)) {}
  int32_t operator()(int64_t t) {
    while (t >= end_ && i_ + 1 < n_) end_ = b_.rank_end(++i_);
    return i_;
  }

 private:
  const TokenBatch& b_;
  int32_t n_;
  int32_t i_ = 0;
  int64_t end_;
};

// Which experts each token was sent to, in priority order (first choice first), CSR layout so
// that routers with a variable number of experts per token share the type.
struct RoutingPlan {
  int64_t num_tokens = 0;
  int32_t num_experts = 0;
  std::vector<int64_t> offsets;  // [num_tokens + 1]
  std::vector<int32_t> expert;   // [assignments]
  std::vector<float> weight;     // [assignments] combine weight

  void reset(int64_t tokens, int32_t experts, int64_t reserve_assignments) {
    num_tokens = tokens;
    num_experts = experts;
    offsets.assign(static_cast<size_t>(tokens) + 1, 0);
    expert.clear();
    weight.clear();
    expert.reserve(static_cast<size_t>(reserve_assignments));
    weight.reserve(static_cast<size_t>(reserve_assignments));
  }
  int64_t assignments() const { return offsets.empty() ? 0 : offsets.back(); }
  int64_t count(int64_t t) const { return offsets[t + 1] - offsets[t]; }
};

// Assignments that survived capacity: kept[a] for each assignment of a RoutingPlan.
struct CapacityResult {
  int64_t capacity = 0;                // tokens per expert, 0 = unlimited
  std::vector<uint8_t> kept;           // [assignments]
  std::vector<int64_t> expert_demand;  // [E] global, before capacity
  std::vector<int64_t> expert_load;    // [E] global, after capacity
  int64_t dropped_assignments = 0;     // global
  int64_t dropped_tokens = 0;          // global: tokens that lost all of their assignments
};

struct Link {
  double bandwidth_Bps = 0;  // bytes per second, one direction, per rank
  double latency_s = 0;
};

enum class LinkClass : int { local = 0, intra = 1, inter = 2 };

struct Topology {
  std::string name = "default";
  int32_t nodes = 1;
  int32_t ranks_per_node = 1;
  Link intra;  // inside a node (NVLink)
  Link inter;  // between nodes (NIC per GPU)
  // true when intra- and inter-node traffic compete for one resource (a single machine's memory
  // system, a PCIe switch shared by GPU and NIC): the model adds the classes instead of
  // overlapping.
  bool shared_links = false;
  // NICs of a node (0: one per rank). inter.bandwidth_Bps is per NIC. Fewer NICs than ranks:
  // consecutive local ranks share one (ranks_per_node must be a multiple); more: each rank drives
  // nics_per_node / ranks_per_node of them (a multiple of ranks_per_node).
  int32_t nics_per_node = 0;
  // Aggregate intra-node bandwidth of a fabric all ranks of a node share (PCIe switches, host
  // bridge), bytes/s per direction; 0: none, each rank's intra link is its own (NVLink switch).
  double intra_node_bandwidth_Bps = 0;

  int32_t ep_size() const { return nodes * ranks_per_node; }
  // Ranks sharing one NIC, and one NIC's (or one rank's NIC group's) bandwidth.
  int32_t ranks_per_nic() const {
    return nics_per_node > 0 && nics_per_node < ranks_per_node ? ranks_per_node / nics_per_node : 1;
  }
  double nic_bandwidth_Bps() const {
    return nics_per_node > ranks_per_node ? inter.bandwidth_Bps * (nics_per_node / ranks_per_node)
                                          : inter.bandwidth_Bps;
  }
  int32_t nic_of(int32_t rank) const { return rank / ranks_per_nic(); }  // global NIC index
  int32_t node_of(int32_t rank) const { return rank / ranks_per_node; }
  int32_t local_of(int32_t rank) const { return rank % ranks_per_node; }
  LinkClass link(int32_t src, int32_t dst) const {
    if (src == dst) return LinkClass::local;
    return node_of(src) == node_of(dst) ? LinkClass::intra : LinkClass::inter;
  }
};

// Expert -> EP rank(s). Every rank holds slots_per_rank expert slots; slot s is on rank
// s / slots_per_rank and holds expert expert_of_slot[s] (-1: empty). An expert may have several
// copies (replicas, on several slots); rank_of_expert is the rank of its first copy. A Placement
// built with only rank_of_expert (tests, benchmarks) has one copy per expert.
struct Placement {
  int32_t slots_per_rank = 0;
  std::vector<int32_t> expert_of_slot;  // [R * slots_per_rank]
  std::vector<int32_t> rank_of_expert;  // [E]
  std::vector<int64_t>
      replica_offsets;  // [E + 1]: copies of e are replica_ranks[offsets[e] .. offsets[e + 1])
  std::vector<int32_t> replica_ranks;  // in slot order

  int32_t copies(int32_t e) const {
    return replica_offsets.empty()
               ? 1
               : static_cast<int32_t>(replica_offsets[e + 1] - replica_offsets[e]);
  }
  const int32_t* ranks_of(int32_t e) const {
    return replica_offsets.empty() ? &rank_of_expert[static_cast<size_t>(e)]
                                   : replica_ranks.data() + replica_offsets[e];
  }
  int64_t physical_experts() const {
    int64_t n = 0;
    for (int32_t e : expert_of_slot) n += e >= 0;
    return expert_of_slot.empty() ? static_cast<int64_t>(rank_of_expert.size()) : n;
  }
  // Builds rank_of_expert and the replica lists from expert_of_slot (experts without a copy get
  // rank -1 and no replicas: callers check).
  void index(int32_t num_experts) {
    rank_of_expert.assign(static_cast<size_t>(num_experts), -1);
    replica_offsets.assign(static_cast<size_t>(num_experts) + 1, 0);
    for (int32_t e : expert_of_slot)
      if (e >= 0) ++replica_offsets[static_cast<size_t>(e) + 1];
    for (int32_t e = 0; e < num_experts; ++e) replica_offsets[e + 1] += replica_offsets[e];
    replica_ranks.assign(static_cast<size_t>(replica_offsets.back()), -1);
    std::vector<int64_t> fill(replica_offsets.begin(), replica_offsets.end() - 1);
    for (size_t s = 0; s < expert_of_slot.size(); ++s) {
      const int32_t e = expert_of_slot[s];
      if (e < 0) continue;
      const int32_t r = static_cast<int32_t>(s / static_cast<size_t>(slots_per_rank));
      if (rank_of_expert[e] < 0) rank_of_expert[e] = r;
      replica_ranks[static_cast<size_t>(fill[e]++)] = r;
    }
  }
  // One copy per expert on the given ranks; slots per rank = the most experts any rank holds.
  static Placement from_ranks(const std::vector<int32_t>& rank_of, int32_t ranks) {
    Placement p;
    std::vector<int32_t> per_rank(static_cast<size_t>(ranks), 0);
    for (int32_t r : rank_of) ++per_rank[static_cast<size_t>(r)];
    p.slots_per_rank = std::max(1, *std::max_element(per_rank.begin(), per_rank.end()));
    p.expert_of_slot.assign(static_cast<size_t>(ranks) * p.slots_per_rank, -1);
    std::fill(per_rank.begin(), per_rank.end(), 0);
    for (size_t e = 0; e < rank_of.size(); ++e) {
      const int32_t r = rank_of[e];
      p.expert_of_slot[static_cast<size_t>(r) * p.slots_per_rank + per_rank[r]++] =
          static_cast<int32_t>(e);
    }
    p.index(static_cast<int32_t>(rank_of.size()));
    return p;
  }
};

// Dense [R x R] matrices, row = source rank, column = destination rank.
struct TrafficMatrix {
  int32_t ranks = 0;
  std::vector<int64_t> tokens;  // token copies sent
  std::vector<int64_t> bytes;   // bytes sent (payload + routing metadata)

  void reset(int32_t r) {
    ranks = r;
    tokens.assign(static_cast<size_t>(r) * r, 0);
    bytes.assign(static_cast<size_t>(r) * r, 0);
  }
  int64_t& tok(int32_t s, int32_t d) { return tokens[static_cast<size_t>(s) * ranks + d]; }
  int64_t& byt(int32_t s, int32_t d) { return bytes[static_cast<size_t>(s) * ranks + d]; }
  int64_t tok(int32_t s, int32_t d) const { return tokens[static_cast<size_t>(s) * ranks + d]; }
  int64_t byt(int32_t s, int32_t d) const { return bytes[static_cast<size_t>(s) * ranks + d]; }
};

}  // namespace moe
