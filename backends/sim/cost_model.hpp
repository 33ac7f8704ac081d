#pragma once
#include "harness/core/types.hpp"

namespace moe {

// Analytical all-to-all model (documented in backends/README.md):
//   for rank r and link class c in {intra, inter}:
//     t_c(r) = latency_c * [r sends or receives on c] + max(send_bytes_c(r), recv_bytes_c(r)) / bandwidth_c
//   t(r) = max(t_intra(r), t_inter(r))        (NVLink and NIC run concurrently, full duplex)
//          t_intra(r) + t_inter(r)            with topology.shared_links (one resource for both)
//   time = max_r t(r)                         (the collective ends with its slowest rank)
// Local (same-rank) bytes are free. algbw = (total bytes / R) / time and busbw = algbw * (R-1)/R,
// as nccl-tests define them for all-to-all.
struct ModelTime {
  double seconds = 0;
  int32_t bottleneck_rank = 0;
  LinkClass bottleneck_link = LinkClass::local;
  double algbw_GBps = 0;
  double busbw_GBps = 0;
};

ModelTime model_alltoall(const TrafficMatrix& m, const Topology& topology);

}  // namespace moe
