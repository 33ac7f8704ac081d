#include "backends/mpi/alltoall.hpp"

#include <cstring>
#include <numeric>

#include "harness/core/error.hpp"

namespace moe {

A2aAlgo parse_a2a_algo(const std::string& name) {
  if (name == "alltoallv") return A2aAlgo::alltoallv;
  if (name == "pairwise") return A2aAlgo::pairwise;
  if (name == "hierarchical") return A2aAlgo::hierarchical;
  throw InputError("--a2a-algo: unknown value '" + name + "' (known: alltoallv, pairwise, hierarchical)");
}

TokenExchanger::TokenExchanger(const Comm& world, const Topology& topo, int64_t token_bytes, A2aAlgo algo)
    : world_(world), ranks_per_node_(topo.ranks_per_node), token_bytes_(token_bytes), algo_(algo) {
  if (topo.ep_size() != world.size())
    throw InputError("real exchanges need one EP rank per process: EP size " + std::to_string(topo.ep_size()) +
                     " != MPI world size " + std::to_string(world.size()));
  MOE_MPI(MPI_Type_contiguous(static_cast<int>(token_bytes), MPI_BYTE, &token_type_));
  MOE_MPI(MPI_Type_commit(&token_type_));
  if (algo_ == A2aAlgo::hierarchical) {
    const int node = world.rank() / ranks_per_node_, local = world.rank() % ranks_per_node_;
    MOE_MPI(MPI_Comm_split(world.raw(), node, local, &node_));
    MOE_MPI(MPI_Comm_split(world.raw(), local == 0 ? 0 : MPI_UNDEFINED, node, &leaders_));
  }
}

TokenExchanger::~TokenExchanger() {
  if (token_type_ != MPI_DATATYPE_NULL) MPI_Type_free(&token_type_);
  if (node_ != MPI_COMM_NULL) MPI_Comm_free(&node_);
  if (leaders_ != MPI_COMM_NULL) MPI_Comm_free(&leaders_);
}

namespace {
// Every count of both layouts is the same, with consecutive displacements.
bool uniform(const wire::ExchangeLayout& sl, const wire::ExchangeLayout& rl) {
  for (size_t p = 0; p < sl.counts.size(); ++p)
    if (sl.counts[p] != sl.counts[0] || rl.counts[p] != sl.counts[0] || sl.displs[p] != static_cast<int>(p) * sl.counts[0] ||
        rl.displs[p] != static_cast<int>(p) * sl.counts[0])
      return false;
  return true;
}
}  // namespace

void TokenExchanger::exchange(const std::byte* send, const wire::ExchangeLayout& sl, std::byte* recv,
                              const wire::ExchangeLayout& rl) {
  const int P = world_.size(), r = world_.rank();
  switch (algo_) {
    case A2aAlgo::alltoallv:
      // Equal counts everywhere: the regular collective, for which MPI libraries pick better
      // algorithms at small sizes (Bruck), on the same buffers and datatype.
      if (uniform(sl, rl)) {
        MOE_MPI(MPI_Alltoall(send, sl.counts[0], token_type_, recv, rl.counts[0], token_type_, world_.raw()));
        return;
      }
      MOE_MPI(MPI_Alltoallv(send, sl.counts.data(), sl.displs.data(), token_type_, recv, rl.counts.data(), rl.displs.data(),
                            token_type_, world_.raw()));
      return;
    case A2aAlgo::pairwise:
      for (int i = 0; i < P; ++i) {
        const int to = (r + i) % P, from = (r - i + P) % P;
        MOE_MPI(MPI_Sendrecv(send + sl.displs[to] * token_bytes_, sl.counts[to], token_type_, to, 7,
                             recv + rl.displs[from] * token_bytes_, rl.counts[from], token_type_, from, 7, world_.raw(),
                             MPI_STATUS_IGNORE));
      }
      return;
    case A2aAlgo::hierarchical:
      hierarchical(send, sl, recv, rl);
      return;
  }
}

void TokenExchanger::hierarchical(const std::byte* send, const wire::ExchangeLayout& sl, std::byte* recv,
                                  const wire::ExchangeLayout& rl) {
  const int P = world_.size(), r = world_.rank(), rpn = ranks_per_node_;
  const int nodes = P / rpn, node = r / rpn, local = r % rpn, base = node * rpn;
  const int64_t tb = token_bytes_;
  // 1. Same-node tokens: one Alltoallv inside the node, straight into place.
  {
    std::vector<int> sc(sl.counts.begin() + base, sl.counts.begin() + base + rpn), sd(sl.displs.begin() + base, sl.displs.begin() + base + rpn);
    std::vector<int> rc(rl.counts.begin() + base, rl.counts.begin() + base + rpn), rd(rl.displs.begin() + base, rl.displs.begin() + base + rpn);
    MOE_MPI(MPI_Alltoallv(send, sc.data(), sd.data(), token_type_, recv, rc.data(), rd.data(), token_type_, node_));
  }
  if (nodes == 1) return;
  // 2. Off-node tokens (in destination order) and every rank's counts go to the node leader.
  std::vector<int> counts_at_leader(local == 0 ? static_cast<size_t>(rpn) * P : 0);  // [local][dest]
  MOE_MPI(MPI_Gather(sl.counts.data(), P, MPI_INT, counts_at_leader.data(), P, MPI_INT, 0, node_));
  int off = 0;
  for (int d = 0; d < P; ++d)
    if (d / rpn != node) off += sl.counts[d];
  off_.resize(static_cast<size_t>(off) * tb);
  {
    int64_t at = 0;
    for (int d = 0; d < P; ++d) {
      if (d / rpn == node || sl.counts[d] == 0) continue;
      std::memcpy(off_.data() + at * tb, send + static_cast<int64_t>(sl.displs[d]) * tb, static_cast<size_t>(sl.counts[d]) * tb);
      at += sl.counts[d];
    }
  }
  std::vector<int> gcounts, gdispls;
  if (local == 0) {
    gcounts.assign(rpn, 0);
    gdispls.assign(rpn, 0);
    int at = 0;
    for (int l = 0; l < rpn; ++l) {
      for (int d = 0; d < P; ++d)
        if (d / rpn != node) gcounts[l] += counts_at_leader[static_cast<size_t>(l) * P + d];
      gdispls[l] = at;
      at += gcounts[l];
    }
    gathered_.resize(static_cast<size_t>(at) * tb);
  }
  MOE_MPI(MPI_Gatherv(off_.data(), off, token_type_, gathered_.data(), gcounts.data(), gdispls.data(), token_type_, 0, node_));
  // 3. Leaders: one message per node pair, ordered (destination rank, source local rank); the
  //    count blocks [local src][local dst] travel first.
  std::vector<int> recv_counts_blocks;  // [node][l_src][j_dst], filled at the leader
  if (local == 0) {
    std::vector<int> count_blocks(static_cast<size_t>(nodes) * rpn * rpn, 0);
    std::vector<int> lc(nodes, 0), ld(nodes, 0);
    // Offset of (l, d) inside l's gathered block.
    std::vector<int64_t> start(static_cast<size_t>(rpn) * P, 0);
    for (int l = 0; l < rpn; ++l) {
      int64_t at = gdispls[l];
      for (int d = 0; d < P; ++d) {
        if (d / rpn == node) continue;
        start[static_cast<size_t>(l) * P + d] = at;
        at += counts_at_leader[static_cast<size_t>(l) * P + d];
      }
    }
    int64_t total = 0;
    for (int m = 0; m < nodes; ++m) {
      ld[m] = static_cast<int>(total);
      if (m == node) continue;
      for (int j = 0; j < rpn; ++j)
        for (int l = 0; l < rpn; ++l) {
          const int c = counts_at_leader[static_cast<size_t>(l) * P + m * rpn + j];
          count_blocks[(static_cast<size_t>(m) * rpn + l) * rpn + j] = c;
          lc[m] += c;
        }
      total += lc[m];
    }
    to_leaders_.resize(static_cast<size_t>(total) * tb);
    for (int m = 0; m < nodes; ++m) {
      if (m == node) continue;
      int64_t at = ld[m];
      for (int j = 0; j < rpn; ++j)
        for (int l = 0; l < rpn; ++l) {
          const int c = counts_at_leader[static_cast<size_t>(l) * P + m * rpn + j];
          if (c == 0) continue;
          std::memcpy(to_leaders_.data() + at * tb, gathered_.data() + start[static_cast<size_t>(l) * P + m * rpn + j] * tb,
                      static_cast<size_t>(c) * tb);
          at += c;
        }
    }
    recv_counts_blocks.assign(static_cast<size_t>(nodes) * rpn * rpn, 0);
    MOE_MPI(MPI_Alltoall(count_blocks.data(), rpn * rpn, MPI_INT, recv_counts_blocks.data(), rpn * rpn, MPI_INT, leaders_));
    std::vector<int> rc(nodes, 0), rd(nodes, 0);
    int64_t rtotal = 0;
    for (int n = 0; n < nodes; ++n) {
      rd[n] = static_cast<int>(rtotal);
      for (int i = 0; i < rpn * rpn; ++i) rc[n] += recv_counts_blocks[static_cast<size_t>(n) * rpn * rpn + i];
      rtotal += rc[n];
    }
    from_leaders_.resize(static_cast<size_t>(rtotal) * tb);
    MOE_MPI(MPI_Alltoallv(to_leaders_.data(), lc.data(), ld.data(), token_type_, from_leaders_.data(), rc.data(), rd.data(),
                          token_type_, leaders_));
    // 4. Repack by local destination j, sources in rank order (node n, local l), and scatter.
    //    From node n the block is ordered (j, l): offset of (n, j, l) computed on the fly.
    std::vector<int> sc(rpn, 0), sd(rpn, 0);
    int64_t stotal = 0;
    for (int j = 0; j < rpn; ++j) {
      sd[j] = static_cast<int>(stotal);
      for (int n = 0; n < nodes; ++n)
        for (int l = 0; l < rpn; ++l) sc[j] += recv_counts_blocks[(static_cast<size_t>(n) * rpn + l) * rpn + j];
      stotal += sc[j];
    }
    scatter_.resize(static_cast<size_t>(stotal) * tb);
    std::vector<int64_t> cursor(sd.begin(), sd.end());
    for (int n = 0; n < nodes; ++n) {
      int64_t at = rd[n];
      for (int j = 0; j < rpn; ++j)
        for (int l = 0; l < rpn; ++l) {
          const int c = recv_counts_blocks[(static_cast<size_t>(n) * rpn + l) * rpn + j];
          if (c == 0) continue;
          // Sources arrive node by node (n ascending), so each j's block stays in source order.
          std::memcpy(scatter_.data() + cursor[j] * tb, from_leaders_.data() + at * tb, static_cast<size_t>(c) * tb);
          cursor[j] += c;
          at += c;
        }
    }
    int mine = 0;
    MOE_MPI(MPI_Scatter(sc.data(), 1, MPI_INT, &mine, 1, MPI_INT, 0, node_));
    mine_.resize(static_cast<size_t>(mine) * tb);
    MOE_MPI(MPI_Scatterv(scatter_.data(), sc.data(), sd.data(), token_type_, mine_.data(), mine, token_type_, 0, node_));
  } else {
    int mine = 0;
    MOE_MPI(MPI_Scatter(nullptr, 1, MPI_INT, &mine, 1, MPI_INT, 0, node_));
    mine_.resize(static_cast<size_t>(mine) * tb);
    MOE_MPI(MPI_Scatterv(nullptr, nullptr, nullptr, token_type_, mine_.data(), mine, token_type_, 0, node_));
  }
  // Place the remote sources' blocks (they arrive in source-rank order).
  int64_t at = 0;
  for (int s = 0; s < P; ++s) {
    if (s / rpn == node || rl.counts[s] == 0) continue;
    std::memcpy(recv + static_cast<int64_t>(rl.displs[s]) * tb, mine_.data() + at * tb, static_cast<size_t>(rl.counts[s]) * tb);
    at += rl.counts[s];
  }
  if (at * tb != static_cast<int64_t>(mine_.size())) fail("hierarchical all-to-all: received token count does not match the layout");
}

}  // namespace moe
