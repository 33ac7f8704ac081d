#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "backends/nccl/route_kernel.hpp"

namespace moe::gpu {

namespace {

void check(cudaError_t rc, const char* what) {
  if (rc != cudaSuccess) throw std::runtime_error(std::string("CUDA call failed: ") + what + ": " + cudaGetErrorString(rc));
}

constexpr int kMaxK = 32;

// One thread per token, the sorted window in registers/local memory.
__global__ void softmax_topk_kernel(const float* __restrict__ z, int64_t tokens, int32_t E, int32_t k, bool renormalize,
                                    int32_t* __restrict__ expert, float* __restrict__ weight) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= tokens) return;
  const float* row = z + t * E;
  float val[kMaxK];
  int32_t idx[kMaxK];
  // Exactly the CPU's topk_indices: the first k insertion-sorted, then strict improvements.
  for (int32_t e = 0; e < E; ++e) {
    const float x = row[e];
    int j;
    if (e < k) {
      j = e;
    } else {
      if (!(x > val[k - 1])) continue;
      j = k - 1;
    }
    while (j > 0 && val[j - 1] < x) {
      val[j] = val[j - 1];
      idx[j] = idx[j - 1];
      --j;
    }
    val[j] = x;
    idx[j] = e;
  }
  const float top = val[0];
  float norm = 0.f;
  if (renormalize) {
    for (int j = 0; j < k; ++j) norm += expf(val[j] - top);
  } else {
    for (int32_t e = 0; e < E; ++e) norm += expf(row[e] - top);
  }
  for (int j = 0; j < k; ++j) {
    expert[t * k + j] = idx[j];
    weight[t * k + j] = expf(val[j] - top) / norm;
  }
}

}  // namespace

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return 0;
  }
  return n;
}

double softmax_topk(const float* logits, int64_t tokens, int32_t E, int32_t k, bool renormalize, int32_t* expert,
                    float* weight) {
  if (k < 1 || k > kMaxK || k > E) throw std::runtime_error("GPU softmax top-k supports 1 <= k <= min(E, 32), got k=" + std::to_string(k));
  if (tokens == 0) return 0;
  float* d_z = nullptr;
  int32_t* d_e = nullptr;
  float* d_w = nullptr;
  const size_t zb = static_cast<size_t>(tokens) * E * sizeof(float), ob = static_cast<size_t>(tokens) * k;
  check(cudaMalloc(&d_z, zb), "cudaMalloc");
  check(cudaMalloc(&d_e, ob * sizeof(int32_t)), "cudaMalloc");
  check(cudaMalloc(&d_w, ob * sizeof(float)), "cudaMalloc");
  check(cudaMemcpy(d_z, logits, zb, cudaMemcpyHostToDevice), "cudaMemcpy H2D");
  cudaEvent_t start, stop;
  check(cudaEventCreate(&start), "cudaEventCreate");
  check(cudaEventCreate(&stop), "cudaEventCreate");
  const int threads = 128;
  const auto blocks = static_cast<unsigned>((tokens + threads - 1) / threads);
  check(cudaEventRecord(start), "cudaEventRecord");
  softmax_topk_kernel<<<blocks, threads>>>(d_z, tokens, E, k, renormalize, d_e, d_w);
  check(cudaGetLastError(), "kernel launch");
  check(cudaEventRecord(stop), "cudaEventRecord");
  check(cudaEventSynchronize(stop), "cudaEventSynchronize");
  float ms = 0;
  check(cudaEventElapsedTime(&ms, start, stop), "cudaEventElapsedTime");
  check(cudaMemcpy(expert, d_e, ob * sizeof(int32_t), cudaMemcpyDeviceToHost), "cudaMemcpy D2H");
  check(cudaMemcpy(weight, d_w, ob * sizeof(float), cudaMemcpyDeviceToHost), "cudaMemcpy D2H");
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  cudaFree(d_z);
  cudaFree(d_e);
  cudaFree(d_w);
  return ms * 1e-3;
}

}  // namespace moe::gpu
