// GPU checks with nothing but CUDA and NCCL: exit 77 (skipped) without a device.
//  1. the softmax top-k kernel equals the CPU router's selection (topk_indices) on random logits
//     with many ties, and its weights match a double-precision softmax;
//  2. a 1-rank NCCL exchange (ncclSend/ncclRecv to itself inside a group) moves a payload intact;
//  3. the kernel's throughput in tokens/s and the logit bytes it reads per second.
#include <cuda_runtime.h>
#include <nccl.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "backends/nccl/route_kernel.hpp"
#include "harness/routing/topk.hpp"

namespace {
int passed = 0, failed = 0;
void check(bool ok, const char* what) {
  std::printf("%s: %s\n", ok ? "PASS" : "FAIL", what);
  (ok ? passed : failed)++;
}

bool kernel_matches_cpu(int32_t E, int32_t k, bool renorm, bool ties) {
  const int64_t T = 20011;
  std::mt19937 gen(static_cast<unsigned>(E * 131 + k));
  std::normal_distribution<float> n(0.f, 2.f);
  std::vector<float> z(static_cast<size_t>(T * E));
  for (auto& x : z) x = ties ? std::round(n(gen)) : n(gen);
  std::vector<int32_t> ge(static_cast<size_t>(T * k)), ce(k);
  std::vector<float> gw(ge.size()), cv(k);
  moe::gpu::softmax_topk(z.data(), T, E, k, renorm, ge.data(), gw.data());
  for (int64_t t = 0; t < T; ++t) {
    const float* row = z.data() + t * E;
    moe::topk_indices(row, E, k, ce.data(), cv.data());
    double all = 0, sel = 0;
    for (int32_t e = 0; e < E; ++e) all += std::exp(double(row[e]) - cv[0]);
    for (int32_t j = 0; j < k; ++j) sel += std::exp(double(cv[j]) - cv[0]);
    for (int32_t j = 0; j < k; ++j) {
      if (ge[t * k + j] != ce[j]) return false;
      const double p = std::exp(double(cv[j]) - cv[0]) / (renorm ? sel : all);
      if (std::abs(gw[t * k + j] - p) > 1e-5 * std::max(1.0, p)) return false;
    }
  }
  return true;
}

bool nccl_self_exchange() {
  ncclComm_t comm;
  int dev = 0;
  if (ncclCommInitAll(&comm, 1, &dev) != ncclSuccess) return false;
  const size_t n = 1 << 22;
  std::vector<uint32_t> host(n), back(n);
  for (size_t i = 0; i < n; ++i) host[i] = static_cast<uint32_t>(i * 2654435761u);
  void *s = nullptr, *r = nullptr;
  cudaMalloc(&s, n * 4);
  cudaMalloc(&r, n * 4);
  cudaMemcpy(s, host.data(), n * 4, cudaMemcpyHostToDevice);
  cudaStream_t st;
  cudaStreamCreate(&st);
  ncclGroupStart();
  ncclSend(s, n * 4, ncclInt8, 0, comm, st);
  ncclRecv(r, n * 4, ncclInt8, 0, comm, st);
  const bool ok_call = ncclGroupEnd() == ncclSuccess;
  cudaStreamSynchronize(st);
  cudaMemcpy(back.data(), r, n * 4, cudaMemcpyDeviceToHost);
  cudaFree(s);
  cudaFree(r);
  cudaStreamDestroy(st);
  ncclCommDestroy(comm);
  return ok_call && back == host;
}
}  // namespace

int main() {
  const int devices = moe::gpu::device_count();
  if (devices == 0) {
    std::printf("SKIP: no CUDA device visible; GPU checks not run\n");
    return 77;
  }
  cudaDeviceProp prop;
  cudaGetDeviceProperties(&prop, 0);
  std::printf("device: %s, %d SMs, %.1f GiB\n", prop.name, prop.multiProcessorCount, prop.totalGlobalMem / double(1 << 30));
  for (auto [E, k] : {std::pair{64, 6}, {256, 8}, {8, 2}, {13, 13}, {128, 1}})
    for (bool renorm : {true, false})
      for (bool ties : {false, true}) {
        char what[128];
        std::snprintf(what, sizeof what, "kernel == CPU router, E=%d k=%d renormalize=%d ties=%d", E, k, renorm, ties);
        check(kernel_matches_cpu(E, k, renorm, ties), what);
      }
  check(nccl_self_exchange(), "1-rank NCCL send/recv moves 16 MiB intact");
  for (auto [E, k] : {std::pair{64, 6}, {256, 8}}) {
    const int64_t T = int64_t{1} << 22;
    std::vector<float> z(static_cast<size_t>(T * E), 0.f);
    std::mt19937 gen(1);
    std::normal_distribution<float> n;
    for (auto& x : z) x = n(gen);
    std::vector<int32_t> e(static_cast<size_t>(T * k));
    std::vector<float> w(e.size());
    moe::gpu::softmax_topk(z.data(), T, E, k, true, e.data(), w.data());  // warm-up
    double best = 1e30;
    for (int i = 0; i < 3; ++i) best = std::min(best, moe::gpu::softmax_topk(z.data(), T, E, k, true, e.data(), w.data()));
    std::printf("kernel E=%d k=%d: %.1f M tokens/s, %.1f GB/s of logits read (+ %.1f GB/s written)\n", E, k, T / best / 1e6,
                T * E * 4.0 / best / 1e9, T * k * 8.0 / best / 1e9);
  }
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
