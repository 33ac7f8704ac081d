#pragma once
#include <cstdint>

// Softmax top-k on the GPU, one thread per token: the k largest logits (ties to the lower index,
// as the CPU router), their softmax weights over the k (renormalize) or over all E. Plain host API
// (no MPI, HDF5 or Boost), so the GPU test binary can use it alone.
namespace moe::gpu {

// Number of visible CUDA devices (0 when there is no driver or no device).
int device_count();

// logits: host [tokens, E]; expert/weight: host [tokens, k]. Throws std::runtime_error on CUDA errors.
// Returns the kernel time in seconds (CUDA events), excluding host<->device copies.
double softmax_topk(const float* logits, int64_t tokens, int32_t E, int32_t k, bool renormalize, int32_t* expert,
                    float* weight);

}  // namespace moe::gpu
