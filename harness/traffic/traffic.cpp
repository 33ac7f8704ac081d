#include "harness/traffic/traffic.hpp"

#include "harness/core/error.hpp"
#include "harness/core/rng.hpp"

namespace moe {

Dedup parse_dedup(const std::string& name) {
  if (name == "token_expert") return Dedup::token_expert;
  if (name == "token_rank") return Dedup::token_rank;
  if (name == "token_node") return Dedup::token_node;
  throw InputError("--dedup: unknown value '" + name +
                   "' (known: token_expert, token_rank, token_node)");
}

ReplicaSelect parse_replica_select(const std::string& name) {
  if (name == "locality") return ReplicaSelect::locality;
  if (name == "round_robin") return ReplicaSelect::round_robin;
  if (name == "random") return ReplicaSelect::random;
  if (name == "token_hash") return ReplicaSelect::token_hash;
  throw InputError("--replica-select: unknown value '" + name +
                   "' (known: locality, round_robin, random, token_hash)");
}

void account_dispatch(const RoutingPlan& plan, const std::vector<uint8_t>& kept,
                      const TokenBatch& batch, const Placement& placement, const Topology& topo,
                      const TrafficSpec& spec, TrafficMatrix& m, DispatchDetail* detail) {
  if (m.ranks != topo.ep_size()) fail("account_dispatch: matrix not reset to the EP size");
  const int64_t payload = spec.payload_bytes;
  const int64_t meta = spec.meta_bytes_per_assignment;
  const bool replicated = !placement.replica_offsets.empty();
  const uint64_t step_key =
      rng::key(spec.seed, 0x7265706c696361ULL, static_cast<uint64_t>(batch.step),
               static_cast<uint64_t>(batch.layer));
  // Per token: distinct destination ranks and how many experts each serves (tiny, reused).
  std::vector<int32_t> dest;
  std::vector<int64_t> per_dest;
  if (plan.num_tokens != batch.num_tokens)
    fail("account_dispatch: plan and batch token counts differ");
  RankCursor source_of(batch);
  const int32_t rank0 = batch.rank_base();
  for (int64_t t = 0; t < plan.num_tokens; ++t) {
    const int32_t local_rank = source_of(t);
    const int32_t src = rank0 + local_rank;
    const uint64_t g = static_cast<uint64_t>(batch.first_token + t);
    // The rank serving expert e for this token.
    auto rank_of = [&](int32_t e) -> int32_t {
      if (!replicated) return placement.rank_of_expert[e];
      const int32_t n = placement.copies(e);
      const int32_t* ranks = placement.ranks_of(e);
      if (n == 1) return ranks[0];
      switch (spec.replica_select) {
        case ReplicaSelect::locality: {
          int32_t same_node = 0;
          for (int32_t i = 0; i < n; ++i) {
            if (ranks[i] == src) return src;
            same_node += topo.node_of(ranks[i]) == topo.node_of(src);
          }
          if (same_node == 0) return ranks[g % static_cast<uint64_t>(n)];
          int64_t pick = static_cast<int64_t>(g % static_cast<uint64_t>(same_node));
          for (int32_t i = 0; i < n; ++i)
            if (topo.node_of(ranks[i]) == topo.node_of(src) && pick-- == 0) return ranks[i];
          return ranks[0];
        }
        case ReplicaSelect::round_robin:
          return ranks[(t - batch.rank_begin(local_rank)) % n];
        case ReplicaSelect::random:
          return ranks[rng::below(
              step_key,
              g * static_cast<uint64_t>(placement.rank_of_expert.size()) + static_cast<uint64_t>(e),
              static_cast<uint64_t>(n))];
        case ReplicaSelect::token_hash:
          return ranks[rng::mix64(g) % static_cast<uint64_t>(n)];
      }
      return ranks[0];
    };
    if (spec.dedup == Dedup::token_expert && !detail) {
      for (int64_t a = plan.offsets[t]; a < plan.offsets[t + 1]; ++a) {
        if (!kept.empty() && !kept[a]) continue;
        const int32_t d = rank_of(plan.expert[a]);
        m.tok(src, d) += 1;
        m.byt(src, d) += payload + meta;
      }
      continue;
    }
    dest.clear();
    per_dest.clear();
    for (int64_t a = plan.offsets[t]; a < plan.offsets[t + 1]; ++a) {
      if (!kept.empty() && !kept[a]) continue;
      const int32_t d = rank_of(plan.expert[a]);
      if (detail) {
        ++detail->rank_assignments[static_cast<size_t>(d)];
        detail->expert_bytes[static_cast<size_t>(plan.expert[a]) * 3 +
                             static_cast<size_t>(topo.link(src, d))] += payload + meta;
      }
      if (spec.dedup == Dedup::token_expert) {
        m.tok(src, d) += 1;
        m.byt(src, d) += payload + meta;
      }
      size_t i = 0;
      while (i < dest.size() && dest[i] != d) ++i;
      if (i == dest.size()) {
        dest.push_back(d);
        per_dest.push_back(0);
      }
      ++per_dest[i];
    }
    if (detail) {
      const size_t nr = std::min(dest.size(), detail->ranks_per_token_hist.size() - 1);
      ++detail->ranks_per_token_hist[nr];
      size_t nodes = 0;
      for (size_t i = 0; i < dest.size(); ++i) {
        bool first = true;
        for (size_t j = 0; j < i && first; ++j)
          first = topo.node_of(dest[j]) != topo.node_of(dest[i]);
        nodes += first;
      }
      ++detail->nodes_per_token_hist[std::min(nodes, detail->nodes_per_token_hist.size() - 1)];
    }
    if (spec.dedup == Dedup::token_expert) continue;
    if (spec.dedup == Dedup::token_rank) {
      for (size_t i = 0; i < dest.size(); ++i) {
        m.tok(src, dest[i]) += 1;
        m.byt(src, dest[i]) += payload + meta * per_dest[i];
      }
      continue;
    }
    // token_node: one network copy per remote node, to the rail-aligned relay, then NVLink hops.
    const int32_t src_node = topo.node_of(src);
    const int32_t rpn = topo.ranks_per_node;
    for (size_t i = 0; i < dest.size(); ++i) {
      const int32_t node = topo.node_of(dest[i]);
      if (node == src_node) {
        m.tok(src, dest[i]) += 1;
        m.byt(src, dest[i]) += payload + meta * per_dest[i];
        continue;
      }
      bool first_of_node = true;
      int64_t node_meta = 0;
      for (size_t j = 0; j < dest.size(); ++j) {
        if (topo.node_of(dest[j]) != node) continue;
        if (j < i) first_of_node = false;
        node_meta += meta * per_dest[j];
      }
      const int32_t relay = node * rpn + topo.local_of(src);
      if (first_of_node) {
        m.tok(src, relay) += 1;
        m.byt(src, relay) += payload + node_meta;
      }
      if (dest[i] != relay) {
        m.tok(relay, dest[i]) += 1;
        m.byt(relay, dest[i]) += payload + meta * per_dest[i];
      }
    }
  }
}

void combine_from_dispatch(const TrafficMatrix& dispatch, int64_t payload_bytes,
                           TrafficMatrix& combine) {
  combine.reset(dispatch.ranks);
  for (int32_t s = 0; s < dispatch.ranks; ++s)
    for (int32_t d = 0; d < dispatch.ranks; ++d) {
      const int64_t n = dispatch.tok(s, d);
      combine.tok(d, s) = n;
      combine.byt(d, s) = n * payload_bytes;
    }
}

std::array<int64_t, 3> bytes_by_class(const TrafficMatrix& m, const Topology& topo) {
  std::array<int64_t, 3> out{0, 0, 0};
  for (int32_t s = 0; s < m.ranks; ++s)
    for (int32_t d = 0; d < m.ranks; ++d) out[static_cast<int>(topo.link(s, d))] += m.byt(s, d);
  return out;
}

}  // namespace moe

namespace moe {

void rank_bytes_by_class(const TrafficMatrix& m, const Topology& topo, std::vector<int64_t>& send,
                         std::vector<int64_t>& recv) {
  send.assign(static_cast<size_t>(m.ranks) * 3, 0);
  recv.assign(static_cast<size_t>(m.ranks) * 3, 0);
  for (int32_t s = 0; s < m.ranks; ++s)
    for (int32_t d = 0; d < m.ranks; ++d) {
      const size_t c = static_cast<size_t>(topo.link(s, d));
      send[static_cast<size_t>(s) * 3 + c] += m.byt(s, d);
      recv[static_cast<size_t>(d) * 3 + c] += m.byt(s, d);
    }
}

}  // namespace moe
