#pragma once
#include <mpi.h>

#include <cstddef>
#include <string>
#include <vector>

#include "backends/mpi/token_codec.hpp"
#include "harness/core/comm.hpp"
#include "harness/core/types.hpp"

namespace moe {

enum class A2aAlgo { alltoallv, pairwise, hierarchical };
A2aAlgo parse_a2a_algo(const std::string& name);  // throws InputError

// Moves token copies between the ranks of `world` (one EP rank per process): the send buffer is
// grouped by destination rank, the receive buffer by source rank, both described by layouts in
// tokens. One MPI datatype per token, so byte counts past 2^31 are legal.
//  alltoallv:    one MPI_Alltoallv;
//  pairwise:     P rounds of MPI_Sendrecv with (rank + i) / (rank - i), the classic schedule;
//  hierarchical: same-node tokens by an Alltoallv inside the node; the rest gathered at the node
//                leader, exchanged between leaders (one message per node pair), scattered inside
//                the destination node.
class TokenExchanger {
 public:
  // Collective over `world`; the topology's ranks_per_node groups consecutive ranks into nodes.
  TokenExchanger(const Comm& world, const Topology& topology, int64_t token_bytes, A2aAlgo algo);
  ~TokenExchanger();
  TokenExchanger(const TokenExchanger&) = delete;
  TokenExchanger& operator=(const TokenExchanger&) = delete;

  // Collective. send/recv layouts come from make_layout(); recv must hold recv_layout.bytes.
  void exchange(const std::byte* send, const wire::ExchangeLayout& send_layout, std::byte* recv,
                const wire::ExchangeLayout& recv_layout);
  int64_t token_bytes() const { return token_bytes_; }

 private:
  void hierarchical(const std::byte* send, const wire::ExchangeLayout& sl, std::byte* recv, const wire::ExchangeLayout& rl);
  Comm world_;  // by value: a Comm is a handle, and callers pass temporaries
  int32_t ranks_per_node_;
  int64_t token_bytes_;
  A2aAlgo algo_;
  MPI_Datatype token_type_ = MPI_DATATYPE_NULL;
  MPI_Comm node_ = MPI_COMM_NULL, leaders_ = MPI_COMM_NULL;
  std::vector<std::byte> off_, gathered_, to_leaders_, from_leaders_, scatter_, mine_;  // hierarchical scratch
};

}  // namespace moe
