#pragma once
#include <string>

#include "harness/core/types.hpp"

namespace moe {

// Analytical all-to-all model, documented with its formulas in backends/README.md. Resources:
// each rank's intra-node link (NVLink port), optionally the node's shared intra fabric (PCIe/host),
// and the NICs (shared by ranks_per_nic() consecutive ranks). A resource's time is
// latency + max(bytes sent, bytes received) / bandwidth (full duplex); local bytes are free.
//   flat:           every (source, destination) entry of the matrix goes directly; NVLink and NIC
//                   run concurrently (max), or add up with topology.shared_links.
//   node_forwarded: the matrix of --dedup token_node (network hop to the rail-aligned relay, NVLink
//                   hop from it): priced as flat, with the two hops pipelined, plus the pipeline
//                   fill (the latency of the hop that is not the bottleneck).
//   hierarchical:   the matrix exchanged as `--a2a-algo hierarchical` does, four sequential phases:
//                   same-node Alltoallv, gather of off-node bytes at each node's leader (local rank
//                   0), leader exchange over all the node's NICs, scatter in the destination node.
// lower_bound_s: the same intra- and inter-node byte totals spread evenly over every rank's link,
// every node fabric and every NIC, exchanged flat. No algorithm moving those bytes is faster in
// this model, so seconds / lower_bound_s is what imbalance (and the algorithm) costs.
enum class A2aModel { flat, node_forwarded, hierarchical };

// The model for a run's --a2a-algo and --dedup: hierarchical, else node_forwarded for token_node,
// else flat.
A2aModel a2a_model_for(const std::string& a2a_algo, const std::string& dedup);

struct ModelTime {
  double seconds = 0;
  int32_t bottleneck_rank = 0;
  LinkClass bottleneck_link = LinkClass::local;
  double algbw_GBps = 0;  // (total bytes / R) / seconds, nccl-tests' all-to-all definition
  double busbw_GBps = 0;  // algbw * (R-1)/R
  double lower_bound_s = 0;
};

ModelTime model_alltoall(const TrafficMatrix& m, const Topology& topology, A2aModel algo = A2aModel::flat);

}  // namespace moe
