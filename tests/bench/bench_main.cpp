// moebench_bench: single-core throughput of the hot stages of the pipeline.
//   route/<router>/E<E>_k<k>          every registered router, tokens/s (items/s), only route()
//   timed capacity/<policy>/E<E>_k<k>       apply_capacity on a softmax_topk plan, CF 1.0, tokens/s
//   dispatch/<dedup>/E<E>_k<k>        account_dispatch on 2 nodes x 4 ranks, contiguous placement,
//   tokens/s model_alltoall[/<variant>]/R1024   the analytical all-to-all model on a 1024 x 1024
//   matrix, s/call,
//                                     balanced lower bound included: flat on 128 DGX-H100-like
//                                     nodes (8 NICs each), node_forwarded, hierarchical, and pcie
//                                     (2 NICs per node, shared node fabric, shared links). Floor:
//                                     <= 0.1 s per call.
//   workload/<name>/E256              every synthetic workload (default knobs, top-8): logits of
//   8192 tokens
//                                     (one EP rank of 16, a new step each call), tokens/s
//   trace_replay/recorded/T<N>        replay of an assignment trace (E64, top-6, N tokens per step)
//   with
//                                     the recorded router: read the step's rows from HDF5, route,
//                                     account the dispatch over 8 ranks; tokens/s (the trace is
//                                     written once, untimed)
// Everything runs on MPI_COMM_SELF; the binary needs no launcher. Each benchmark runs for at least
// 0.2 s unless --benchmark_min_time is given. Exits 1 if any benchmark reported an error.
#include <benchmark/benchmark.h>
#include <mpi.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "backends/sim/cost_model.hpp"
#include "harness/capacity/capacity.hpp"
#include "harness/core/comm.hpp"
#include "harness/core/types.hpp"
#include "harness/routing/router.hpp"
#include "harness/traffic/traffic.hpp"
#include "workloads/trace_file.hpp"
#include "workloads/workload.hpp"

namespace {

constexpr int64_t kTokens = 16384;
constexpr const char* kDefaultMinTime = "--benchmark_min_time=0.2";  // seconds per benchmark
constexpr uint64_t kSeed = 20240611;

struct Shape {
  int32_t experts;
  int32_t top_k;
  std::string label() const { return "E" + std::to_string(experts) + "_k" + std::to_string(top_k); }
};
const Shape kShapes[] = {{64, 6}, {256, 8}};

bool g_any_error = false;

void skip(benchmark::State& state, const std::string& why) {
  g_any_error = true;
  state.SkipWithError(why.c_str());
}

moe::Topology single_rank() {
  return moe::Topology{};
}

moe::Topology two_by_four() {
  moe::Topology t;
  t.name = "bench-2x4";
  t.nodes = 2;
  t.ranks_per_node = 4;
  t.intra = {450e9, 2e-6};
  t.inter = {50e9, 5e-6};
  return t;
}

// Inputs shared by the benchmarks of one shape, built on first use (outside any timed region) so
// that a --benchmark_filter that skips a shape does not pay for it.
struct Inputs {
  moe::TokenBatch batch;
  moe::RoutingPlan softmax_plan;
};

const Inputs& build_inputs(const Shape& shape) {
  static std::map<std::pair<int32_t, int32_t>, std::unique_ptr<Inputs>> cache;
  auto& slot = cache[{shape.experts, shape.top_k}];
  if (!slot) {
    auto in = std::make_unique<Inputs>();
    moe::WorkloadSetup ws;
    ws.num_experts = shape.experts;
    ws.num_layers = 1;
    ws.top_k = shape.top_k;
    ws.ep_size = 1;
    ws.tokens_per_rank = kTokens;
    ws.seq_len = 1;
    ws.seed = kSeed;
    moe::make_workload("uniform", ws, {})->generate(0, 0, 0, kTokens, in->batch);
    moe::RouterSetup rs;
    rs.num_experts = shape.experts;
    rs.top_k = shape.top_k;
    rs.num_layers = 1;
    rs.topology = single_rank();
    moe::make_router("softmax_topk", rs, {})->route(in->batch, moe::Comm::self(), in->softmax_plan);
    // What an assignment trace of these tokens would hold, for the `recorded` router.
    in->batch.recorded_k = shape.top_k;
    in->batch.recorded_expert = in->softmax_plan.expert;
    in->batch.recorded_weight = in->softmax_plan.weight;
    slot = std::move(in);
  }
  return *slot;
}

// nullptr (and the benchmark marked failed) when the inputs cannot be built.
const Inputs* inputs(benchmark::State& state, const Shape& shape) {
  try {
    return &build_inputs(shape);
  } catch (const std::exception& e) {
    skip(state, std::string("building the inputs failed: ") + e.what());
    return nullptr;
  }
}

void bm_route(benchmark::State& state, const std::string& name, Shape shape) {
  const Inputs* inputs_ptr = inputs(state, shape);
  if (!inputs_ptr) return;
  const Inputs& in = *inputs_ptr;
  const moe::Comm self = moe::Comm::self();
  moe::RouterSetup rs;
  rs.num_experts = shape.experts;
  rs.top_k = shape.top_k;
  rs.num_layers = 1;
  rs.topology = single_rank();
  std::unique_ptr<moe::Router> router;
  moe::RoutingPlan plan;
  try {
    router = moe::make_router(name, rs, {});
    router->route(in.batch, self, plan);  // warm-up: sizes the plan's buffers
  } catch (const std::exception& e) {
    skip(state, "router '" + name + "' failed: " + e.what());
    return;
  }
  for (auto _ : state) {
    router->route(in.batch, self, plan);
    benchmark::DoNotOptimize(plan.expert.data());
    benchmark::DoNotOptimize(plan.weight.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * in.batch.num_tokens);
}

void bm_capacity(benchmark::State& state, const std::string& policy, Shape shape) {
  const Inputs* inputs_ptr = inputs(state, shape);
  if (!inputs_ptr) return;
  const Inputs& in = *inputs_ptr;
  const moe::Comm self = moe::Comm::self();
  moe::CapacitySpec spec;
  spec.capacity_factor = 1.0;
  spec.top_k = shape.top_k;
  spec.policy = policy;
  moe::CapacityResult out;
  try {
    moe::apply_capacity(in.softmax_plan, spec, in.batch.num_tokens, self, out);
  } catch (const std::exception& e) {
    skip(state, "apply_capacity(" + policy + ") failed: " + e.what());
    return;
  }
  for (auto _ : state) {
    moe::apply_capacity(in.softmax_plan, spec, in.batch.num_tokens, self, out);
    benchmark::DoNotOptimize(out.kept.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * in.batch.num_tokens);
  state.counters["dropped_frac"] = static_cast<double>(out.dropped_assignments) /
                                   static_cast<double>(in.softmax_plan.assignments());
}

void bm_dispatch(benchmark::State& state, moe::Dedup dedup, Shape shape) {
  const Inputs* inputs_ptr = inputs(state, shape);
  if (!inputs_ptr) return;
  const Inputs& in = *inputs_ptr;
  const moe::Topology topo = two_by_four();
  const int32_t R = topo.ep_size();
  moe::Placement placement;
  for (int64_t e = 0; e < shape.experts; ++e)
    placement.rank_of_expert.push_back(static_cast<int32_t>(e * R / shape.experts));
  moe::TrafficSpec spec;
  spec.dedup = dedup;
  spec.payload_bytes = 7168 * 2;  // DeepSeek-V3 hidden size in bf16
  moe::TokenBatch layout;         // the batch's tokens spread evenly over the R ranks
  layout.num_tokens = in.batch.num_tokens;
  layout.tokens_per_rank = in.batch.num_tokens / R;
  const std::vector<uint8_t> all_kept;  // empty: every assignment kept
  moe::TrafficMatrix m;
  for (auto _ : state) {
    m.reset(R);
    moe::account_dispatch(in.softmax_plan, all_kept, layout, placement, topo, spec, m);
    benchmark::DoNotOptimize(m.tokens.data());
    benchmark::DoNotOptimize(m.bytes.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * in.batch.num_tokens);
}

void bm_model_alltoall(benchmark::State& state, moe::A2aModel algo, bool pcie) {
  constexpr int32_t R = 1024;
  moe::Topology topo;
  topo.name = "bench-128x8";
  topo.nodes = 128;
  topo.ranks_per_node = 8;
  topo.intra = {450e9, 2e-6};
  topo.inter = {50e9, 5e-6};
  topo.nics_per_node = 8;
  if (pcie) {
    topo.intra = {50e9, 5e-6};
    topo.intra_node_bandwidth_Bps = 100e9;
    topo.nics_per_node = 2;
    topo.shared_links = true;
  }
  moe::TrafficMatrix m;
  m.reset(R);
  uint64_t x = kSeed;  // splitmix64
  for (size_t i = 0; i < m.bytes.size(); ++i) {
    x += 0x9e3779b97f4a7c15ull;
    uint64_t z = x;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    m.bytes[i] = static_cast<int64_t>(z >> 44);  // [0, 1 MiB)
    m.tokens[i] = m.bytes[i] / (7168 * 2);
  }
  for (auto _ : state) {
    moe::ModelTime t = moe::model_alltoall(m, topo, algo);
    benchmark::DoNotOptimize(t);
  }
  state.SetItemsProcessed(state.iterations());
  state.counters["s_per_call"] = benchmark::Counter(
      1.0, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}

void bm_workload(benchmark::State& state, const std::string& name) {
  constexpr int64_t kRankTokens = 8192;
  moe::WorkloadSetup ws;
  ws.num_experts = 256;
  ws.num_layers = 4;
  ws.top_k = 8;
  ws.ep_size = 16;
  ws.tokens_per_rank = kRankTokens;
  ws.seq_len = 4096;
  ws.seed = kSeed;
  moe::TokenBatch batch;
  try {
    auto workload = moe::make_workload(name, ws, {});
    int32_t step = 0;
    int64_t tokens = 0;  // ragged workloads give rank 5 a different count each step
    for (auto _ : state) {
      workload->generate_ranks(step, step % 4, 5, 1, batch);  // rank 5 of 16, a new step every call
      ++step;
      tokens += batch.num_tokens;
      benchmark::DoNotOptimize(batch.logits.data());
      benchmark::ClobberMemory();
    }
    state.SetItemsProcessed(tokens);
  } catch (const std::exception& e) {
    skip(state, "workload '" + name + "' failed: " + e.what());
  }
}

const char* dedup_name(moe::Dedup d) {
  switch (d) {
    case moe::Dedup::token_expert:
      return "token_expert";
    case moe::Dedup::token_rank:
      return "token_rank";
    case moe::Dedup::token_node:
      return "token_node";
  }
  return "?";
}

// An assignment trace of `tokens` tokens (one step, one layer, E64 top-6 from a Zipf workload),
// written once per process to a temporary file.
std::string replay_trace(int64_t tokens) {
  struct Paths : std::map<int64_t, std::string> {
    ~Paths() {
      for (const auto& [n, p] : *this) std::remove(p.c_str());
    }
  };
  static Paths paths;
  auto& path = paths[tokens];
  if (!path.empty()) return path;
  path = "/tmp/moebench_bench_trace_" + std::to_string(::getpid()) + "_" + std::to_string(tokens) +
         ".h5";
  moe::WorkloadSetup ws{64, 1, 6, 1, tokens, 512, kSeed};
  moe::TokenBatch b;
  moe::make_workload("zipf", ws, {})->generate(0, 0, 0, tokens, b);
  moe::RouterSetup rs;
  rs.num_experts = 64;
  rs.top_k = 6;
  rs.num_layers = 1;
  rs.topology = single_rank();
  moe::RoutingPlan plan;
  moe::make_router("softmax_topk", rs, {{"renormalize", "false"}})
      ->route(b, moe::Comm::self(), plan);
  moe::TraceWriterOptions o;
  o.kind = "assignments";
  o.weights_are = "probabilities";
  o.num_experts = 64;
  o.num_layers = 1;
  o.top_k = 6;
  o.has_sequences = true;
  o.force = true;
  moe::TraceWriter w(path, o);
  const int64_t first = w.append_tokens(0, tokens, b.sequence, b.position);
  w.write_assignments(0, first, tokens, plan.expert.data(), plan.weight.data());
  w.finish();
  return path;
}

// Replay of an assignment trace by `router`: recorded (ids only), or softmax_topk on logits
// reconstructed (--trace-tail none) or completed by a tail model (mass, profile): the cost of
// completion is the difference.
void bm_trace_replay(benchmark::State& state, int64_t tokens, const std::string& router_name,
                     const std::string& tail) {
  try {
    const std::string path = replay_trace(tokens);
    const moe::Topology topo = two_by_four();
    moe::WorkloadSetup ws{64, 1, 6, topo.ep_size(), 0, 1, kSeed};
    ws.trace_file = path;
    ws.need_logits = router_name != "recorded";
    ws.trace_tail = tail;
    auto workload = moe::make_workload("trace", ws, {});
    moe::RouterSetup rs;
    rs.num_experts = 64;
    rs.top_k = 6;
    rs.num_layers = 1;
    rs.topology = topo;
    auto router = moe::make_router(router_name, rs, {});
    moe::Placement placement;
    for (int32_t e = 0; e < 64; ++e) placement.rank_of_expert.push_back(e * topo.ep_size() / 64);
    moe::TrafficSpec spec;
    spec.payload_bytes = 7168 * 2;
    moe::TokenBatch batch;
    moe::RoutingPlan plan;
    moe::TrafficMatrix m;
    const std::vector<uint8_t> all_kept;
    int32_t step = 0;
    for (auto _ : state) {
      workload->generate_ranks(step++, 0, 0, topo.ep_size(),
                               batch);  // a new step each time: no caching
      router->route(batch, moe::Comm::self(), plan);
      m.reset(topo.ep_size());
      moe::account_dispatch(plan, all_kept, batch, placement, topo, spec, m);
      benchmark::DoNotOptimize(m.tokens.data());
    }
    state.SetItemsProcessed(state.iterations() * tokens);
  } catch (const std::exception& e) {
    skip(state, e.what());
  }
}

void register_all() {
  for (int64_t tokens : {int64_t{1} << 16, int64_t{1} << 20})
    benchmark::RegisterBenchmark(("trace_replay/recorded/T" + std::to_string(tokens)).c_str(),
                                 bm_trace_replay, tokens, std::string("recorded"),
                                 std::string("none"))
        ->Unit(benchmark::kMillisecond);
  for (const char* tail : {"none", "mass", "profile"})
    benchmark::RegisterBenchmark(
        ("trace_replay/softmax_topk/tail_" + std::string(tail) + "/T65536").c_str(),
        bm_trace_replay, int64_t{1} << 16, std::string("softmax_topk"), std::string(tail))
        ->Unit(benchmark::kMillisecond);
  for (const std::string& name : moe::RouterRegistry::instance().names())
    for (const Shape& s : kShapes)
      benchmark::RegisterBenchmark(("route/" + name + "/" + s.label()).c_str(), bm_route, name, s)
          ->Unit(benchmark::kMicrosecond);
  for (const char* policy : {"position", "probability"})
    for (const Shape& s : kShapes)
      benchmark::RegisterBenchmark(("capacity/" + std::string(policy) + "/" + s.label()).c_str(),
                                   bm_capacity, std::string(policy), s)
          ->Unit(benchmark::kMicrosecond);
  for (moe::Dedup d : {moe::Dedup::token_expert, moe::Dedup::token_rank, moe::Dedup::token_node})
    for (const Shape& s : kShapes)
      benchmark::RegisterBenchmark(
          ("dispatch/" + std::string(dedup_name(d)) + "/" + s.label()).c_str(), bm_dispatch, d, s)
          ->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("model_alltoall/R1024", bm_model_alltoall, moe::A2aModel::flat,
                               false)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("model_alltoall/node_forwarded/R1024", bm_model_alltoall,
                               moe::A2aModel::node_forwarded, false)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("model_alltoall/hierarchical/R1024", bm_model_alltoall,
                               moe::A2aModel::hierarchical, false)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("model_alltoall/pcie/R1024", bm_model_alltoall, moe::A2aModel::flat,
                               true)
      ->Unit(benchmark::kMillisecond);
  for (const std::string& name : moe::WorkloadRegistry::instance().names())
    if (name != "trace")
      benchmark::RegisterBenchmark(("workload/" + name + "/E256").c_str(), bm_workload, name)
          ->Unit(benchmark::kMillisecond);
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  // Short runs by default (the whole binary takes a few seconds); an explicit --benchmark_min_time
  // wins. The default goes in as a flag rather than Benchmark::MinTime() so that the names stay
  // route/softmax_topk/E64_k6 and friends, without a /min_time: suffix.
  std::vector<char*> args(argv, argv + argc);
  std::string min_time_flag = kDefaultMinTime;
  bool user_min_time = false;
  for (int i = 1; i < argc; ++i)
    if (std::strncmp(argv[i], "--benchmark_min_time", 20) == 0) user_min_time = true;
  if (!user_min_time) args.insert(args.begin() + 1, min_time_flag.data());
  int bargc = static_cast<int>(args.size());
  args.push_back(nullptr);
  int rc = 0;
  try {
    register_all();
    benchmark::Initialize(&bargc, args.data());
    if (benchmark::ReportUnrecognizedArguments(bargc, args.data())) {
      rc = 2;
    } else {
      benchmark::RunSpecifiedBenchmarks();
      benchmark::Shutdown();
      if (g_any_error) rc = 1;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "moebench_bench: %s\n", e.what());
    rc = 1;
  }
  MPI_Finalize();
  return rc;
}
