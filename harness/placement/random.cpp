// random: the experts in a seeded random order (Fisher-Yates on the counter RNG keyed by --seed),
// then placed like contiguous: the i-th expert of the order on rank floor(i * R / E).
#include <numeric>

#include "harness/core/rng.hpp"
#include "harness/placement/placement.hpp"

namespace moe {
namespace {
const PlacementRegistry::Registrar reg(
    "random", "experts in a seeded random order, then contiguous blocks (--seed)",
    PlacementStrategy{false, false, [](const PlacementSetup& s) {
                        const int32_t E = s.num_experts;
                        const int64_t R = s.topology.ep_size();
                        std::vector<int32_t> order(static_cast<size_t>(E));
                        std::iota(order.begin(), order.end(), 0);
                        const uint64_t key = rng::key(s.seed, 0x706c6163656d656eULL);  // "placemen"
                        for (int32_t i = E - 1; i > 0; --i)
                          std::swap(order[i], order[rng::below(key, static_cast<uint64_t>(i), static_cast<uint64_t>(i) + 1)]);
                        Placement p;
                        p.rank_of_expert.resize(static_cast<size_t>(E));
                        for (int32_t i = 0; i < E; ++i) p.rank_of_expert[order[i]] = static_cast<int32_t>(i * R / E);
                        return p;
                      }});
}  // namespace
}  // namespace moe
