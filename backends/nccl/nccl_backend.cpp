// The `nccl` backend: the dispatch and combine of `run --backend nccl` between GPUs, one per rank
// (local rank on the host -> device local_rank % devices), with ncclSend/ncclRecv per peer inside
// one ncclGroupStart/End, timed with CUDA events; the NCCL id travels over MPI. Payloads are the
// same stamped tokens as the mpi backend, verified on the host after a copy back.
// Built only when CMake finds CUDA and NCCL.
#include <cuda_runtime.h>
#include <mpi.h>
#include <nccl.h>

#include <algorithm>
#include <string>
#include <vector>

#include "backends/backend.hpp"
#include "backends/gpu_routing.hpp"
#include "backends/mpi/token_codec.hpp"
#include "backends/nccl/route_kernel.hpp"
#include "harness/core/error.hpp"

namespace moe {
namespace {

void cuda_check(cudaError_t rc, const char* what) {
  if (rc != cudaSuccess) throw Error(std::string("CUDA call failed: ") + what + ": " + cudaGetErrorString(rc));
}
void nccl_check(ncclResult_t rc, const char* what) {
  if (rc != ncclSuccess) throw Error(std::string("NCCL call failed: ") + what + ": " + ncclGetErrorString(rc));
}

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { release(); }
  std::byte* get(size_t bytes) {
    if (bytes > capacity_ || !ptr_) {
      release();
      void* p = nullptr;
      cuda_check(cudaMalloc(&p, std::max<size_t>(bytes, 1)), "cudaMalloc");
      ptr_ = static_cast<std::byte*>(p);
      capacity_ = bytes;
    }
    return ptr_;
  }

 private:
  void release() {
    if (ptr_) cudaFree(ptr_);
    ptr_ = nullptr;
    capacity_ = 0;
  }
  std::byte* ptr_ = nullptr;
  size_t capacity_ = 0;
};

class NcclBackend final : public ExchangeBackend {
 public:
  NcclBackend(const BackendSetup& s, const Topology& topo, const Comm& group) : setup_(s), tb_(wire::token_bytes(s.payload_bytes)) {
    if (topo.ep_size() != group.size())
      throw InputError("--backend nccl needs one EP rank per process (EP size == MPI world size)");
    // Local rank on this host -> device; every rank checks that every host has a device first.
    MPI_Comm local;
    MOE_MPI(MPI_Comm_split_type(group.raw(), MPI_COMM_TYPE_SHARED, group.rank(), MPI_INFO_NULL, &local));
    int local_rank = 0;
    MPI_Comm_rank(local, &local_rank);
    MPI_Comm_free(&local);
    const int devices = gpu::device_count();
    if (group.min(static_cast<int64_t>(devices)) == 0)
      throw InputError("--backend nccl: no CUDA device is visible on at least one host (use --backend mpi there)");
    cuda_check(cudaSetDevice(local_rank % devices), "cudaSetDevice");
    ncclUniqueId id;
    if (group.root()) nccl_check(ncclGetUniqueId(&id), "ncclGetUniqueId");
    MOE_MPI(MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, group.raw()));
    nccl_check(ncclCommInitRank(&comm_, group.size(), id, group.rank()), "ncclCommInitRank");
    cuda_check(cudaStreamCreate(&stream_), "cudaStreamCreate");
    cuda_check(cudaEventCreate(&start_), "cudaEventCreate");
    cuda_check(cudaEventCreate(&stop_), "cudaEventCreate");
  }
  NcclBackend(const NcclBackend&) = delete;
  NcclBackend& operator=(const NcclBackend&) = delete;
  ~NcclBackend() override {
    cudaEventDestroy(start_);
    cudaEventDestroy(stop_);
    cudaStreamDestroy(stream_);
    ncclCommDestroy(comm_);
  }

  ExchangeResult exchange(const TrafficMatrix& dispatch, const TrafficMatrix&, const Topology&, const Comm& group) override {
    const int P = group.size(), r = group.rank();
    const PeerCounts counts = exchange_counts(dispatch, group);
    const std::vector<int64_t>& send_counts = counts.send;
    const std::vector<int64_t>& recv_counts = counts.recv;
    std::vector<int64_t> sd(P), rd(P);
    int64_t st = 0, rt = 0;
    for (int p = 0; p < P; ++p) {
      sd[p] = st;
      rd[p] = rt;
      st += send_counts[p];
      rt += recv_counts[p];
    }
    host_send_.resize(static_cast<size_t>(st * tb_));
    host_recv_.resize(static_cast<size_t>(rt * tb_));
    for (int d = 0; d < P; ++d)
      for (int64_t j = 0; j < send_counts[d]; ++j) wire::write_token(host_send_.data() + (sd[d] + j) * tb_, tb_, r, d, j);
    std::byte* d_send = send_buf_.get(static_cast<size_t>(st * tb_));
    std::byte* d_recv = recv_buf_.get(static_cast<size_t>(rt * tb_));
    std::byte* d_back = back_buf_.get(static_cast<size_t>(st * tb_));
    cuda_check(cudaMemcpy(d_send, host_send_.data(), host_send_.size(), cudaMemcpyHostToDevice), "cudaMemcpy H2D");

    auto exchange_once = [&](const std::byte* sbuf, const std::vector<int64_t>& sc, const std::vector<int64_t>& sdis, std::byte* rbuf,
                             const std::vector<int64_t>& rc, const std::vector<int64_t>& rdis) {
      nccl_check(ncclGroupStart(), "ncclGroupStart");
      for (int p = 0; p < P; ++p) {
        if (sc[p]) nccl_check(ncclSend(sbuf + sdis[p] * tb_, static_cast<size_t>(sc[p] * tb_), ncclInt8, p, comm_, stream_), "ncclSend");
        if (rc[p]) nccl_check(ncclRecv(rbuf + rdis[p] * tb_, static_cast<size_t>(rc[p] * tb_), ncclInt8, p, comm_, stream_), "ncclRecv");
      }
      nccl_check(ncclGroupEnd(), "ncclGroupEnd");
    };
    auto timed = [&](auto&& once) {
      for (int i = 0; i < setup_.warmup; ++i) once();
      cuda_check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
      group.barrier();
      cuda_check(cudaEventRecord(start_, stream_), "cudaEventRecord");
      for (int i = 0; i < setup_.iters; ++i) once();
      cuda_check(cudaEventRecord(stop_, stream_), "cudaEventRecord");
      cuda_check(cudaEventSynchronize(stop_), "cudaEventSynchronize");
      float ms = 0;
      cuda_check(cudaEventElapsedTime(&ms, start_, stop_), "cudaEventElapsedTime");
      return static_cast<double>(ms) * 1e-3 / setup_.iters;
    };
    RankExchange mine;
    mine.dispatch_s = timed([&] { exchange_once(d_send, send_counts, sd, d_recv, recv_counts, rd); });
    cuda_check(cudaMemcpy(host_recv_.data(), d_recv, host_recv_.size(), cudaMemcpyDeviceToHost), "cudaMemcpy D2H");
    mine.combine_s = timed([&] { exchange_once(d_recv, recv_counts, rd, d_back, send_counts, sd); });
    host_back_.resize(host_send_.size());
    cuda_check(cudaMemcpy(host_back_.data(), d_back, host_back_.size(), cudaMemcpyDeviceToHost), "cudaMemcpy D2H");
    mine.lost = counts.lost;
    mine.corrupted = wire::count_corrupted<int64_t>(host_recv_.data(), tb_, recv_counts, rd, r, true) +
                     wire::count_corrupted<int64_t>(host_back_.data(), tb_, send_counts, sd, r, false);
    mine.sent = mine.received = st + rt;
    mine.dispatch_bytes = st * tb_;
    return gather_exchange(mine, group);
  }

 private:
  BackendSetup setup_;
  int64_t tb_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t start_ = nullptr, stop_ = nullptr;
  DeviceBuffer send_buf_, recv_buf_, back_buf_;
  std::vector<std::byte> host_send_, host_recv_, host_back_;
};

const BackendRegistry::Registrar reg(
    "nccl", "real GPU all-to-all with ncclSend/ncclRecv per peer, CUDA-event timing, verified after copy-back; one GPU per rank",
    [](const BackendSetup& s, const Topology& t, const Comm& g) -> std::unique_ptr<ExchangeBackend> {
      return std::make_unique<NcclBackend>(s, t, g);
    });

// --route-on gpu for softmax_topk: same selection and weights as the CPU router.
const GpuRouteRegistry::Registrar gpu_softmax(
    "softmax_topk", "CUDA kernel, one thread per token",
    [](const TokenBatch& b, int32_t k, const std::map<std::string, std::string>& args, RoutingPlan& plan) {
      auto it = args.find("renormalize");
      const bool renorm = it == args.end() || it->second == "true" || it->second == "1" || it->second == "on" || it->second == "yes";
      if (gpu::device_count() == 0) throw InputError("--route-on gpu: no CUDA device is visible");
      plan.reset(b.num_tokens, b.num_experts, b.num_tokens * k);
      plan.expert.resize(static_cast<size_t>(b.num_tokens) * k);
      plan.weight.resize(static_cast<size_t>(b.num_tokens) * k);
      try {
        gpu::softmax_topk(b.logits.data(), b.num_tokens, b.num_experts, k, renorm, plan.expert.data(), plan.weight.data());
      } catch (const std::runtime_error& e) {
        throw Error(e.what());
      }
      for (int64_t t = 0; t < b.num_tokens; ++t) plan.offsets[t + 1] = (t + 1) * k;
    });

}  // namespace
}  // namespace moe
