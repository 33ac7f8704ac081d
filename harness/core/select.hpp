#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "harness/core/comm.hpp"

namespace moe {

// Group-wide top-quota selection per bucket, without gathering entries on one process.
// Each process passes its entries in global order (processes hold consecutive global ranges in rank
// order). For every bucket b, the quota[b] entries with the largest keys over the whole group are
// selected; equal keys go to the entry that comes first globally. A bucket with no more entries
// than its quota selects them all. Exact and bit-identical for any number of processes: a 33-step
// bisection on an order-preserving integer image of the float keys, with integer allreduces.
// Collective over `group`; O(entries log entries + 33 allreduces of `buckets` int64).
void select_top_per_bucket(const Comm& group, int32_t buckets, std::span<const int32_t> bucket_of_entry,
                           std::span<const float> key_of_entry, std::span<const int64_t> quota,
                           std::vector<uint8_t>& selected);

// Sums vectors of n doubles, one per EP rank, in EP-rank order, so the result is bit-identical on
// any number of processes (floating-point addition is not associative; an allreduce's order depends
// on the process count). `per_rank` holds [ranks_here][n] for this process's consecutive EP ranks;
// every process must host the same number of EP ranks. Collective; returns [n] on every process.
std::vector<double> ordered_rank_sum(const Comm& group, std::span<const double> per_rank, int64_t n, int32_t ranks_here);

}  // namespace moe
