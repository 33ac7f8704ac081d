#include "backends/sim/cost_model.hpp"

#include <algorithm>
#include <vector>

namespace moe {

A2aModel a2a_model_for(const std::string& a2a_algo, const std::string& dedup) {
  if (a2a_algo == "hierarchical") return A2aModel::hierarchical;
  if (dedup == "token_node") return A2aModel::node_forwarded;
  return A2aModel::flat;
}

namespace {

// Bytes each resource sends and receives, by link class (same-rank bytes excluded).
struct Tally {
  std::vector<double> send_intra, recv_intra, send_inter, recv_inter;  // [R]
  std::vector<double> node_send_intra, node_recv_intra;               // [nodes]
  std::vector<double> node_send_inter, node_recv_inter;               // [nodes]
  std::vector<double> nic_send, nic_recv;                             // [NICs]
  double total = 0, intra = 0, inter = 0;
};

void tally(const TrafficMatrix& m, const Topology& topo, Tally& t) {
  const int32_t R = m.ranks, rpn = std::max(1, topo.ranks_per_node);
  const int32_t nodes = (R + rpn - 1) / rpn, per_nic = topo.ranks_per_nic();
  const int32_t nics = (R + per_nic - 1) / per_nic;
  t.send_intra.assign(R, 0.0);
  t.recv_intra.assign(R, 0.0);
  t.send_inter.assign(R, 0.0);
  t.recv_inter.assign(R, 0.0);
  t.node_send_intra.assign(nodes, 0.0);
  t.node_recv_intra.assign(nodes, 0.0);
  t.node_send_inter.assign(nodes, 0.0);
  t.node_recv_inter.assign(nodes, 0.0);
  t.nic_send.assign(nics, 0.0);
  t.nic_recv.assign(nics, 0.0);
  int64_t total = 0, local = 0, intra = 0;
  for (int32_t s = 0; s < R; ++s) {
    const int64_t* row = m.bytes.data() + static_cast<size_t>(s) * R;
    const int32_t ns = s / rpn, first = ns * rpn, last = std::min(R, first + rpn);
    int64_t row_total = 0, row_intra = 0;
    for (int32_t d = 0; d < R; ++d) row_total += row[d];
    for (int32_t d = first; d < last; ++d) {
      if (d == s) continue;
      row_intra += row[d];
      t.recv_intra[d] += static_cast<double>(row[d]);
    }
    total += row_total;
    local += row[s];
    intra += row_intra;
    const int64_t row_inter = row_total - row_intra - row[s];
    t.send_intra[s] = static_cast<double>(row_intra);
    t.send_inter[s] = static_cast<double>(row_inter);
    if (row_inter == 0) continue;
    for (int32_t d = 0; d < R; ++d)
      if (d < first || d >= last) t.recv_inter[d] += static_cast<double>(row[d]);
  }
  t.total = static_cast<double>(total);
  t.intra = static_cast<double>(intra);
  t.inter = static_cast<double>(total - local - intra);
  for (int32_t r = 0; r < R; ++r) {
    t.node_send_intra[r / rpn] += t.send_intra[r];
    t.node_recv_intra[r / rpn] += t.recv_intra[r];
    t.node_send_inter[r / rpn] += t.send_inter[r];
    t.node_recv_inter[r / rpn] += t.recv_inter[r];
    t.nic_send[r / per_nic] += t.send_inter[r];
    t.nic_recv[r / per_nic] += t.recv_inter[r];
  }
}

// Intra-node time of bytes `port` on one rank's link and `fabric` on its node's shared fabric.
double intra_time(double port, double fabric, const Topology& topo) {
  if (port <= 0) return 0;
  double t = port / topo.intra.bandwidth_Bps;
  if (topo.intra_node_bandwidth_Bps > 0) t = std::max(t, fabric / topo.intra_node_bandwidth_Bps);
  return topo.intra.latency_s + t;
}

void flat(const Tally& t, const Topology& topo, ModelTime& out) {
  const int32_t R = static_cast<int32_t>(t.send_intra.size()), rpn = std::max(1, topo.ranks_per_node);
  const int32_t per_nic = topo.ranks_per_nic();
  const double nic_Bps = topo.nic_bandwidth_Bps();
  for (int32_t r = 0; r < R; ++r) {
    const int32_t n = r / rpn, k = r / per_nic;
    const double port = std::max(t.send_intra[r], t.recv_intra[r]);
    const double ti = intra_time(port, std::max(t.node_send_intra[n], t.node_recv_intra[n]), topo);
    const double te = (t.send_inter[r] > 0 || t.recv_inter[r] > 0)
                          ? topo.inter.latency_s + std::max(t.nic_send[k], t.nic_recv[k]) / nic_Bps
                          : 0.0;
    const double tr = topo.shared_links ? ti + te : std::max(ti, te);
    if (tr > out.seconds) {
      out.seconds = tr;
      out.bottleneck_rank = r;
      out.bottleneck_link = te > ti ? LinkClass::inter : LinkClass::intra;
    }
  }
}

// --a2a-algo hierarchical (backends/mpi/alltoall.cpp): four phases, one after the other.
void hierarchical(const Tally& t, const Topology& topo, ModelTime& out) {
  const int32_t R = static_cast<int32_t>(t.send_intra.size()), rpn = std::max(1, topo.ranks_per_node);
  const int32_t nodes = static_cast<int32_t>(t.node_send_intra.size());
  // 1. Same-node bytes, every rank at once: the flat model's intra part.
  double phase[4] = {0, 0, 0, 0};
  int32_t worst[4] = {0, 0, 0, 0};
  for (int32_t r = 0; r < R; ++r) {
    const int32_t n = r / rpn;
    const double ti = intra_time(std::max(t.send_intra[r], t.recv_intra[r]),
                                 std::max(t.node_send_intra[n], t.node_recv_intra[n]), topo);
    if (ti > phase[0]) phase[0] = ti, worst[0] = r;
  }
  // 2-4. Per node: the leader's link (and the node fabric) carries the other ranks' off-node bytes
  // in (gather) and out (scatter); the node's NICs together carry the leader exchange.
  const double node_nic_Bps = topo.nic_bandwidth_Bps() * (rpn / topo.ranks_per_nic());
  for (int32_t n = 0; n < nodes; ++n) {
    const int32_t leader = n * rpn, end = std::min(R, leader + rpn);
    double gather = 0, scatter = 0;
    for (int32_t r = leader + 1; r < end; ++r) {
      gather += t.send_inter[r];
      scatter += t.recv_inter[r];
    }
    const double tg = intra_time(gather, gather, topo), ts = intra_time(scatter, scatter, topo);
    const double bytes = std::max(t.node_send_inter[n], t.node_recv_inter[n]);
    const double tx = bytes > 0 ? topo.inter.latency_s + bytes / node_nic_Bps : 0.0;
    if (tg > phase[1]) phase[1] = tg, worst[1] = leader;
    if (tx > phase[2]) phase[2] = tx, worst[2] = leader;
    if (ts > phase[3]) phase[3] = ts, worst[3] = leader;
  }
  int slow = -1;
  for (int p = 0; p < 4; ++p) {
    out.seconds += phase[p];
    if (phase[p] > 0 && (slow < 0 || phase[p] > phase[slow])) slow = p;
  }
  if (slow >= 0) {
    out.bottleneck_rank = worst[slow];
    out.bottleneck_link = slow == 2 ? LinkClass::inter : LinkClass::intra;
  }
}

double lower_bound(const Tally& t, const Topology& topo) {
  const double R = static_cast<double>(t.send_intra.size());
  const double nodes = static_cast<double>(t.node_send_intra.size()), nics = static_cast<double>(t.nic_send.size());
  const double nic_Bps = topo.nic_bandwidth_Bps();
  double bw_intra = t.intra / R / topo.intra.bandwidth_Bps;
  if (topo.intra_node_bandwidth_Bps > 0) bw_intra = std::max(bw_intra, t.intra / nodes / topo.intra_node_bandwidth_Bps);
  const double bw_inter = t.inter / nics / nic_Bps;
  const double li = t.intra > 0 ? topo.intra.latency_s + bw_intra : 0.0;
  const double le = t.inter > 0 ? topo.inter.latency_s + bw_inter : 0.0;
  double lb = std::max(li, le);
  if (topo.shared_links && t.intra > 0 && t.inter > 0) {
    // Averaged over ranks, the per-rank sums of both classes; the slowest rank pays at least the
    // smaller latency.
    const double both = std::min(topo.intra.latency_s, topo.inter.latency_s) + t.intra / R / topo.intra.bandwidth_Bps +
                        t.inter / nics / nic_Bps;
    lb = std::max(lb, both);
  }
  return lb;
}

}  // namespace

ModelTime model_alltoall(const TrafficMatrix& m, const Topology& topo, A2aModel algo) {
  ModelTime out;
  const int32_t R = m.ranks;
  if (R <= 0) return out;
  Tally t;
  tally(m, topo, t);
  if (algo == A2aModel::hierarchical) {
    hierarchical(t, topo, out);
  } else {
    flat(t, topo, out);
    // Forwarded copies: the relay starts its NVLink hop when the first network chunk arrives (and
    // the combine's network hop when the first reduced chunk is ready): the hops pipeline, and the
    // exchange ends one latency of the other hop after its bottleneck hop.
    if (algo == A2aModel::node_forwarded && !topo.shared_links && t.intra > 0 && t.inter > 0)
      out.seconds += out.bottleneck_link == LinkClass::inter ? topo.intra.latency_s : topo.inter.latency_s;
  }
  out.lower_bound_s = lower_bound(t, topo);
  if (out.seconds > 0) {
    out.algbw_GBps = t.total / R / out.seconds / 1e9;
    out.busbw_GBps = out.algbw_GBps * (R - 1) / R;
  }
  return out;
}

}  // namespace moe
