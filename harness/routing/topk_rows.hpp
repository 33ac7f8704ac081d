#pragma once
#include <cstdint>

namespace moe {

// What topk_rows writes as the weight of each selected expert.
enum class TopKWeights {
  logits,          // the selected logits themselves (callers apply their own gate function)
  softmax_topk,    // softmax over the k selected logits (= renormalised softmax top-k)
  softmax_full,    // softmax over all E logits, then the selected k (no renormalisation)
};

// For each of `tokens` rows of `logits` ([tokens, E], row-major): the k largest entries, largest
// first, ties to the lower index (exactly topk_indices()), and their weights. Writes
// expert[t*k + j] and weight[t*k + j]. Branch-free across 8 tokens at a time (one SIMD lane per
// token: no data-dependent branches to mispredict), with an AVX2 clone chosen at run time.
void topk_rows(const float* logits, int64_t tokens, int32_t E, int32_t k, TopKWeights weights, int32_t* expert,
               float* weight);

}  // namespace moe
