#include "backends/sim/cost_model.hpp"

#include <algorithm>
#include <vector>

namespace moe {

ModelTime model_alltoall(const TrafficMatrix& m, const Topology& topo) {
  const int32_t R = m.ranks;
  // [rank][class]: bytes sent and received on intra (0) and inter (1) links.
  std::vector<double> send(static_cast<size_t>(R) * 2, 0.0), recv(static_cast<size_t>(R) * 2, 0.0);
  double total = 0;
  for (int32_t s = 0; s < R; ++s)
    for (int32_t d = 0; d < R; ++d) {
      const double b = static_cast<double>(m.byt(s, d));
      total += b;
      if (s == d || b == 0) continue;
      const int c = topo.node_of(s) == topo.node_of(d) ? 0 : 1;
      send[s * 2 + c] += b;
      recv[d * 2 + c] += b;
    }
  ModelTime out;
  const Link links[2] = {topo.intra, topo.inter};
  for (int32_t r = 0; r < R; ++r) {
    double t_rank = 0, t_worst = 0;
    int worst = -1;
    for (int c = 0; c < 2; ++c) {
      const double bytes = std::max(send[r * 2 + c], recv[r * 2 + c]);
      if (bytes == 0) continue;
      const double t = links[c].latency_s + bytes / links[c].bandwidth_Bps;
      t_rank = topo.shared_links ? t_rank + t : std::max(t_rank, t);
      if (t > t_worst) {
        t_worst = t;
        worst = c;
      }
    }
    if (t_rank > out.seconds) {
      out.seconds = t_rank;
      out.bottleneck_rank = r;
      out.bottleneck_link = worst == 0 ? LinkClass::intra : LinkClass::inter;
    }
  }
  if (out.seconds > 0) {
    out.algbw_GBps = total / R / out.seconds / 1e9;
    out.busbw_GBps = out.algbw_GBps * (R - 1) / R;
  }
  return out;
}

}  // namespace moe
